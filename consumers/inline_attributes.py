"""Teaching a consumer class its instances' attributes before its connections come, so
CPython keeps each consumer's attributes inline (``AsyncConsumer.as_asgi``)."""

from __future__ import annotations


def learn_attributes(consumer: object) -> None:
    """Set every attribute of its class's ``_instance_attributes`` on ``consumer`` (made
    to be thrown away), so that the class knows them all before its connections come.
    CPython keeps an instance's attributes inline, without a ``__dict__``, while they are
    among those its class knew when the instance was made (plus one); a later one turns
    the instance's attributes into a dict. The layer side's (``_eager``, ``_reading``) are
    first set at a consumer's first layer message: the first broadcast after a storm of
    connections made a dict for each of its members (9 objects left a member instead of
    8, hundreds of bytes each, at 1,000 members 1.4 more collections).

    It runs none of the user's code: ``object.__setattr__``, not the class's own, and a
    name the class has a data descriptor for (a property, a slot, a user's own) is left
    alone, found as ``object.__setattr__`` finds it (through the MRO, not ``getattr``,
    which would run the descriptor or a metaclass property)."""
    cls = type(consumer)
    for name in getattr(cls, "_instance_attributes", ()):
        found = next(
            (klass.__dict__[name] for klass in cls.__mro__ if name in klass.__dict__), None
        )
        kind = type(found)
        if not (hasattr(kind, "__set__") or hasattr(kind, "__delete__")):
            object.__setattr__(consumer, name, None)
