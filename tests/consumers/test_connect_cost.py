"""What a WebSocket connect costs the server (issue 20, connection storms): work done once
instead of per connection gives the same answers as before."""

import asyncio
import os
import sys
import threading

import pytest
from django.test import override_settings
from django.urls import path, re_path
from django.urls.resolvers import RoutePattern
from django.utils import translation
from django.utils.functional import lazy

from channels_layer import base
from channels_layer.base import BaseChannelLayer
from channels_layer.memory import InMemoryChannelLayer
from consumers import metrics, send_deadline
from consumers.consumer import AsyncConsumer, _from_daphne
from consumers.routing import URLRouter


def app(scope, receive, send):
    return None


# Routing -------------------------------------------------------------------------------


def test_a_literal_route_resolves_without_its_regex(monkeypatch):
    router = URLRouter([path("ws/echo/", app), path("ws/broadcast/", app)])

    def no_regex(self, path):
        raise AssertionError("the regex of a literal route was run")

    monkeypatch.setattr(RoutePattern, "match", no_regex)
    assert router.resolve("ws/broadcast/") == (app, (), {}, "")
    assert router.resolve("ws/broadcast/x") is None
    assert router.resolve("ws/") is None


@pytest.mark.parametrize(
    "requested",
    ["ws/a.b+c/", "ws/aXb+c/", "ws/5/", "ws/x/", "n/x/", "n/y/", "n/", "ws/echo/", "ws/echo"],
)
def test_literal_routes_answer_as_their_regex_does(requested):
    inner = URLRouter([path("x/", app)])
    routes = [
        path("ws/echo/", app),
        path("ws/a.b+c/", app, {"extra": 1}),
        path("ws/<int:number>/", app),
        re_path(r"^ws/(?P<name>x)/$", app),
        path("n/", inner),
    ]
    fast = URLRouter(routes)
    slow = URLRouter(routes)
    slow._literals = [None] * len(routes)  # every route through Django's match
    assert fast._literals[0] == ("ws/echo/", True)
    assert fast._literals[4] == ("n/", False)  # a nested router's prefix
    assert fast._literals[2] is None and fast._literals[3] is None
    assert fast.resolve(requested) == slow.resolve(requested)


# Settings ------------------------------------------------------------------------------


async def test_the_send_timeout_is_read_once_and_again_after_a_change(monkeypatch):
    async def send(message):
        pass

    with override_settings(CONSUMERS_WEBSOCKET_SEND_TIMEOUT=3):
        assert send_deadline.send_within_deadline(send, {})._timeout == 3.0

        def reread():
            raise AssertionError("the setting was read again")

        with monkeypatch.context() as patched:
            patched.setattr(send_deadline, "_read_timeout", reread)
            assert send_deadline.send_within_deadline(send, {})._timeout == 3.0
    assert send_deadline.send_within_deadline(send, {})._timeout == 10.0


# Metrics -------------------------------------------------------------------------------


class Timed(AsyncConsumer):
    pass


def test_consumers_of_a_class_share_its_timer():
    first, second = Timed(), Timed()
    first.scope = second.scope = {"type": "websocket"}
    job = Timed()
    job.scope = {"type": "channel"}
    assert metrics.handling(first) is metrics.handling(second)
    assert metrics.handling(job) is not metrics.handling(first)
    assert metrics.handling(job).job and not metrics.handling(first).job


def test_a_shared_timer_times_each_thread_s_block_apart(monkeypatch):
    consumer = Timed()
    consumer.scope = {"type": "websocket"}
    timer = metrics.handling(consumer)
    seen = []
    monkeypatch.setattr(timer, "observe", seen.append)
    clock = iter([1.0, 2.0, 10.0, 13.0, 20.0, 24.0])
    monkeypatch.setattr(metrics, "clock", lambda: next(clock))
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    with timer:  # started at 1
        with timer:  # started at 2, ends at 10
            pass

        def block():
            with timer:
                pass

        other = threading.Thread(target=block)
        other.start()  # from 13 to 20: its own start, not this thread's
        other.join()
    assert seen == [8.0, 7.0, 23.0]  # the outer block: from 1 to 24


# Channel names ---------------------------------------------------------------------------


async def test_channel_names_are_unique_random_hex_and_known_valid():
    layer = InMemoryChannelLayer()
    names = {await layer.new_channel() for _ in range(3 * base.HEX_BATCH)}
    assert len(names) == 3 * base.HEX_BATCH
    for name in names:
        prefix, _, digits = name.partition("!")
        assert prefix == "specific.inmemory"
        assert len(digits) == 16 and int(digits, 16) >= 0
    assert names & base._VALID_CHANNELS  # no regex when group_add checks them
    assert layer.require_valid_channel_name(names.pop())


def test_a_remembered_name_is_still_checked_for_length():
    class Short(BaseChannelLayer):
        MAX_NAME_LENGTH = 10

    assert BaseChannelLayer().require_valid_group_name("a-long-group-name")
    assert "a-long-group-name" in base._VALID_GROUPS
    with pytest.raises(TypeError):
        Short().require_valid_group_name("a-long-group-name")
    with pytest.raises(TypeError):
        BaseChannelLayer().require_valid_group_name("with!bang")  # a valid channel name


def test_the_valid_names_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(base, "VALID_NAMES_KEPT", 4)
    layer = BaseChannelLayer()
    for number in range(10):
        layer.require_valid_group_name(f"bounded-{number}")
    assert len(base._VALID_GROUPS) <= 4


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_draws_its_own_digits():
    base._random_hex()  # a batch in the parent
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child)
        os.write(writing, base._random_hex().encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    drawn = os.read(reading, 64).decode()
    os.close(reading)
    assert drawn not in base._hex_batch
    assert drawn != base._random_hex()


# Daphne --------------------------------------------------------------------------------


def test_a_send_is_not_inspected_when_daphne_is_not_loaded(monkeypatch):
    class Touchy:
        def __getattr__(self, name):
            raise AssertionError(f"inspected {name}")

    monkeypatch.delitem(sys.modules, "daphne.server", raising=False)
    assert _from_daphne(Touchy()) is False


# The layer -----------------------------------------------------------------------------


def test_a_built_layer_is_found_without_the_settings(monkeypatch):
    from channels_layer import registry

    layer = InMemoryChannelLayer()
    monkeypatch.setitem(registry.channel_layers.backends, "connect-cost", layer)

    def no_settings(self):
        raise AssertionError("the settings were read")

    monkeypatch.setattr(registry.ChannelLayerManager, "configs", property(no_settings))
    assert registry.get_channel_layer("connect-cost") is layer


def test_a_translated_route_matches_in_the_active_language():
    """A lazily translated route's regex follows the active language (Django compiles
    one per language): text compared as at startup would keep the startup language's."""
    words = {"en": "chat/", "fr": "discussion/"}
    route = lazy(lambda: words.get(translation.get_language(), "chat/"), str)()
    router = URLRouter([path(route, app)])
    with translation.override("fr"):
        assert router.resolve("discussion/") == (app, (), {}, "")
        assert router.resolve("chat/") is None
    with translation.override("en"):
        assert router.resolve("chat/") == (app, (), {}, "")


async def test_interleaved_handlers_on_one_loop_keep_their_own_starts(monkeypatch):
    """Async handlers of several consumers interleave on one thread: each ``with
    handling()`` block is timed from its own start, whatever order they end in."""
    first, second = Timed(), Timed()
    first.scope = second.scope = {"type": "websocket"}
    timer = metrics.handling(first)
    seen = []
    monkeypatch.setattr(timer, "observe", seen.append)
    clock = iter([0.0, 1.0, 3.0, 4.0])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(metrics, "clock", lambda: next(clock))
    second_started, first_done = asyncio.Event(), asyncio.Event()

    async def slow():
        with metrics.handling(first):  # from 0 to 3
            await second_started.wait()
        first_done.set()

    async def late():
        await asyncio.sleep(0)
        with metrics.handling(second):  # from 1 to 4: it ends after the first
            second_started.set()
            await first_done.wait()

    await asyncio.gather(slow(), late())
    assert seen == [3.0, 3.0]
