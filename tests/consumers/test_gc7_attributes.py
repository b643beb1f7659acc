"""The first layer message a consumer gets leaves no ``__dict__`` on it (issue 20): the
class knows the layer side's attributes before its connections come (``as_asgi``), so
CPython keeps them inline in each consumer, as it does the others."""

import asyncio
import gc
import platform
import weakref

import pytest

from channels_layer import get_channel_layer
from consumers.consumer import AsyncConsumer, SyncConsumer
from consumers.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer

from .test_idle_objects import open_idle

pytestmark = pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="CPython's inline attributes"
)
CONNECTIONS = 20


class Member(AsyncWebsocketConsumer):
    groups = ["gc7.members"]

    async def gc7_message(self, event):
        await self.send(text_data=event["text"])


def with_dict(consumers: list) -> int:
    """How many of ``consumers`` have their attributes in a dict of their own (reading
    ``__dict__`` would make one: the collector's referents show it instead)."""
    return sum(
        any(type(ref) is dict and "channel_name" in ref for ref in gc.get_referents(consumer))
        for consumer in consumers
    )


async def test_the_first_broadcast_makes_no_dict_per_member():
    class Fresh(Member):  # a class of its own: none of its instances was ever made
        pass

    app = Fresh.as_asgi()
    connections = [await open_idle(app) for _ in range(CONNECTIONS)]
    consumers = [thing for thing in gc.get_objects() if type(thing) is Fresh]
    assert len(consumers) == CONNECTIONS  # as_asgi's own instance is gone
    assert with_dict(consumers) == 0
    await get_channel_layer().group_send("gc7.members", {"type": "gc7.message", "text": "hi"})
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(sent[-1] == {"type": "websocket.send", "text": "hi"} for _, sent, _ in connections)
    assert all(consumer._reading is not None for consumer in consumers)  # layer side started
    assert with_dict(consumers) == 0
    for inbox, _, _ in connections:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*(task for _, _, task in connections))


def test_every_attribute_a_consumer_sets_is_listed():
    """What ``__call__`` and the layer side set is in ``_instance_attributes`` (a new one
    left out would bring the dicts back)."""
    import inspect
    import re

    from consumers import consumer as module

    for cls in (AsyncConsumer, SyncConsumer):
        source = inspect.getsource(cls)
        if cls is AsyncConsumer:
            source += inspect.getsource(module.metrics.handling)
        set_here = set(re.findall(r"(?:self|consumer)\.(\w+)(?:: [^=\n]+)? = ", source))
        set_here.discard("base_send")  # a property
        assert set_here <= set(cls._instance_attributes), set_here - set(cls._instance_attributes)


def test_learning_leaves_properties_alone():
    class WithProperty(WebsocketConsumer):
        @property
        def channel_name(self):  # a subclass's own: not set on the instance
            return "fixed"

    WithProperty.as_asgi()  # no AttributeError from setting the property
    assert WithProperty().channel_name == "fixed"


class _PerInstance:
    """A data descriptor keeping each instance's value in a WeakKeyDictionary: read on
    the class (no instance), it raises TypeError, not AttributeError."""

    def __init__(self):
        self.values = weakref.WeakKeyDictionary()

    def __get__(self, instance, owner):
        return self.values[instance]

    def __set__(self, instance, value):
        self.values[instance] = value


class _Checked:
    """A data descriptor that gives its default when read on the class and refuses
    values that aren't strings, keeping what it was given on the class."""

    def __get__(self, instance, owner):
        return "default" if instance is None else owner.__dict__.get("_checked", "default")

    def __set__(self, instance, value):
        if not isinstance(value, str):
            raise TypeError(f"not a str: {value!r}")
        type(instance)._checked = value


def test_learning_runs_no_user_code():
    """``as_asgi`` makes its instance as before and runs nothing else of the user's: no
    ``__setattr__``, no descriptor (read on the class or set), no metaclass property."""
    calls = []

    class Meta(type):
        @property
        def scope(cls):
            calls.append("metaclass scope")
            return None

    class Watched(WebsocketConsumer, metaclass=Meta):
        channel_layer = _PerInstance()
        channel_name = _Checked()

        def __setattr__(self, name, value):
            calls.append(name)
            super().__setattr__(name, value)
            if name == "scope":  # derived from the scope, as a user might
                super().__setattr__("path", value["path"])

    Watched.as_asgi()
    assert calls == []
    assert "_checked" not in Watched.__dict__  # nothing left on the class


async def test_a_consumer_with_its_own_setattr_and_descriptors_still_works():
    class Watched(AsyncWebsocketConsumer):
        channel_layer = _PerInstance()
        groups = ["gc7.watched"]

        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "scope":
                super().__setattr__("path", value["path"])

        async def gc7_message(self, event):
            await self.send(text_data=f"{self.path} {event['text']}")

    inbox, sent, task = await open_idle(Watched.as_asgi())
    await get_channel_layer().group_send("gc7.watched", {"type": "gc7.message", "text": "hi"})
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent[-1] == {"type": "websocket.send", "text": "/ hi"}
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await task
