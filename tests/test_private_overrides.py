"""No class of ours overrides a private method of a class it extends (ours, Django's,
Daphne's, Autobahn's): a rename there would silently change it, and a base that calls its
own private method would get ours (Autobahn's ``_trigger`` calls ``self._send()``)."""

import importlib
import inspect
import pkgutil

PACKAGES = ("consumers", "channels_layer", "chat")
# Private by name, but the documented way to extend the base.
HOOKS = {("django.utils.functional", "LazyObject", "_setup")}


def our_classes():
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module_info in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            module = importlib.import_module(module_info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__:
                    yield cls


def test_no_class_overrides_a_private_method_of_a_base():
    overrides = []
    for cls in our_classes():
        for name, value in vars(cls).items():
            if not name.startswith("_") or name.startswith("__") or not callable(value):
                continue
            for base in cls.__mro__[1:]:
                if name in vars(base) and (base.__module__, base.__name__, name) not in HOOKS:
                    overrides.append(
                        f"{cls.__module__}.{cls.__qualname__}.{name} overrides "
                        f"{base.__module__}.{base.__qualname__}.{name}"
                    )
                    break
    assert overrides == []
