"""``import channels...`` answered by this project's modules, for code written for Channels.

``install()`` adds an import hook: ``channels.<module>`` is the very module object of
``consumers.<module>`` (``channels.layers`` is ``channels_layer``), so patching one patches
the other, and a settings string such as ``"channels.layers.InMemoryChannelLayer"`` works.
Nothing is imported before it is asked for, so settings may be configured afterwards.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

ALIASES = {
    "channels.apps": "consumers.apps",
    "channels.auth": "consumers.auth",
    "channels.consumer": "consumers.consumer",
    "channels.db": "consumers.db",
    "channels.exceptions": "consumers.exceptions",
    "channels.generic": "consumers.generic",
    "channels.generic.http": "consumers.generic.http",
    "channels.generic.websocket": "consumers.generic.websocket",
    "channels.layers": "channels_layer",
    "channels.middleware": "consumers.middleware",
    "channels.routing": "consumers.routing",
    "channels.security": "consumers.security",
    "channels.security.websocket": "consumers.security.websocket",
    "channels.sessions": "consumers.sessions",
    "channels.testing": "consumers.testing",
    "channels.testing.application": "consumers.testing.communicators",
    "channels.testing.http": "consumers.testing.communicators",
    "channels.testing.live": "consumers.testing.live",
    "channels.testing.websocket": "consumers.testing.communicators",
    "channels.worker": "consumers.worker",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: types.ModuleType) -> None:
        """The target module ran when it was imported."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in ALIASES:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(ALIASES[fullname]))


def install() -> None:
    """Make ``channels`` and its submodules importable; a second call does nothing."""
    if "channels" in sys.modules:
        if getattr(sys.modules["channels"], "is_consumers_shim", False):
            return
        raise RuntimeError("The real Django Channels is already imported; the shim would hide it")
    package = types.ModuleType("channels", "Django Channels' names, served by django-consumers.")
    package.__path__ = []
    package.__version__ = "4.3.2"  # type: ignore[attr-defined]
    package.DEFAULT_CHANNEL_LAYER = "default"  # type: ignore[attr-defined]
    package.is_consumers_shim = True  # type: ignore[attr-defined]
    sys.modules["channels"] = package
    sys.meta_path.insert(0, _AliasFinder())
