"""What an idle connection keeps for the cyclic collector to scan (issue 20): no bound
method per connection, neither the layer side's start nor the metrics' count of sends."""

import asyncio
import gc
import types

from channels_layer import get_channel_layer
from consumers import metrics
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.send_deadline import send_within_deadline

CONNECTIONS = 50


class Idle(AsyncWebsocketConsumer):
    groups = ["idle.objects"]

    async def idle_message(self, event):
        await self.send(text_data=event["text"])


def bound_methods() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if type(thing) is types.MethodType)


async def open_idle(app):
    """One idle connection (its inbox, its sent frames, its task), once accepted."""
    inbox: asyncio.Queue = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    sent: list = []

    async def receive():  # a function, not ``inbox.get``: a bound method of its own
        return await inbox.get()

    async def send(message):
        sent.append(message)

    task = asyncio.ensure_future(app({"type": "websocket", "path": "/"}, receive, send))
    while not sent:
        await asyncio.sleep(0)
    return inbox, sent, task


async def test_an_idle_consumer_keeps_no_bound_method():
    app = Idle.as_asgi()
    await open_idle(app)  # warm-up: the layer, the caches
    before = bound_methods()
    connections = [await open_idle(app) for _ in range(CONNECTIONS)]
    assert all([m["type"] for m in sent] == ["websocket.accept"] for _, sent, _ in connections)
    assert (bound_methods() - before) / CONNECTIONS < 0.1
    # Still reached by the layer, as before: its layer side starts at the first message.
    await get_channel_layer().group_send("idle.objects", {"type": "idle.message", "text": "hi"})
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(sent[-1] == {"type": "websocket.send", "text": "hi"} for _, sent, _ in connections)
    for inbox, _, _ in connections:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.gather(*(task for _, _, task in connections))


async def test_the_send_deadline_keeps_the_watch_not_its_bound_method(monkeypatch):
    counted: list = []

    async def send(message):
        pass

    watch = metrics.WebSocketWatch(send, send)
    monkeypatch.setattr(
        metrics.WebSocketWatch, "sent", lambda self, message: counted.append(message)
    )
    deadline = send_within_deadline(watch.send, {"type": "websocket"})
    assert not any(type(thing) is types.MethodType for thing in gc.get_referents(deadline))
    await deadline({"type": "websocket.send", "text": "x"})
    assert counted == [{"type": "websocket.send", "text": "x"}]
