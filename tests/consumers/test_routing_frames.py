"""An idle WebSocket's task keeps only the coroutines that do work: the outermost
``ProtocolTypeRouter`` (which watches it for the metrics) and the consumer's, not one per
router and ``as_asgi()`` app that only passes the connection on (issue 20: memory and CPU
per connection). What inspects applications still sees coroutine functions."""

import asyncio
import functools
import inspect

from asgiref.compatibility import guarantee_single_callable
from django.urls import path

from consumers.consumer import AsyncConsumer
from consumers.exceptions import StopConsumer
from consumers.routing import ProtocolTypeRouter, URLRouter, _outermost_router
from consumers.testing import WebsocketCommunicator


class Accepting(AsyncConsumer):
    async def websocket_connect(self, message):
        await self.send({"type": "websocket.accept"})

    async def websocket_receive(self, message):
        route = self.scope["url_route"]
        await self.send({"type": "websocket.send", "text": f"{route['kwargs']}"})

    async def websocket_disconnect(self, message):
        raise StopConsumer


def coroutine_chain(task):
    """The qualified names of the coroutines a task is suspended in, outermost first."""
    names = []
    awaited = task.get_coro()
    while inspect.iscoroutine(awaited):
        names.append(awaited.cr_code.co_qualname)
        awaited = awaited.cr_await
    return names


async def idle_chain(application, path="/ws/room/"):
    """The coroutine chain of an accepted, idle WebSocket served by ``application``."""
    inbox = asyncio.Queue()
    accepted = asyncio.Event()

    async def send(message):
        if message["type"] == "websocket.accept":
            accepted.set()

    scope = {"type": "websocket", "path": path, "headers": [], "query_string": b""}
    task = asyncio.create_task(application(scope, inbox.get, send))
    inbox.put_nowait({"type": "websocket.connect"})
    await asyncio.wait_for(accepted.wait(), 5)
    await asyncio.sleep(0.01)
    try:
        return coroutine_chain(task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_idle_websocket_waits_in_the_outer_router_and_the_consumer_only():
    inner = URLRouter([path("room/", Accepting.as_asgi())])
    application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/", inner)])})
    chain = await idle_chain(application)
    assert chain[:2] == ["ProtocolTypeRouter.__call__", "AsyncConsumer.__call__"]
    assert not any("_handle_messages" in name for name in chain)
    assert not any("URLRouter" in name or ".app" in name or "serve" in name for name in chain)


async def test_a_wrapper_made_with_functools_wraps_still_runs():
    """wraps() copies the app's attributes: the router must not start the consumer past it."""
    app = Accepting.as_asgi()
    wrapped = []

    @functools.wraps(app)
    async def wrapper(scope, receive, send):
        wrapped.append(scope["path"])
        await app(scope, receive, send)

    application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/room/", wrapper)])})
    chain = await idle_chain(application)
    assert wrapped == ["/ws/room/"]
    assert "test_a_wrapper_made_with_functools_wraps_still_runs.<locals>.wrapper" in chain


async def test_a_router_subclass_with_its_own_call_still_runs():
    called = []

    class Counting(URLRouter):
        async def __call__(self, scope, receive, send):
            called.append(scope["path"])
            return await super().__call__(scope, receive, send)

    application = ProtocolTypeRouter(
        {"websocket": Counting([path("ws/<str:room>/", Accepting.as_asgi())])}
    )
    await idle_chain(application)
    assert called == ["/ws/room/"]


async def test_url_route_is_filled_as_before_without_the_router_frames():
    inner = URLRouter([path("<str:room>/", Accepting.as_asgi())])
    application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/<int:n>/", inner)])})
    communicator = WebsocketCommunicator(application, "/ws/7/lobby/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data="hi")
    assert await communicator.receive_from() == "{'n': 7, 'room': 'lobby'}"
    await communicator.disconnect()


def test_apps_and_routers_are_still_coroutine_functions_to_servers_and_asgiref():
    app = Accepting.as_asgi()
    router = URLRouter([path("ws/", app)])
    protocol_router = ProtocolTypeRouter({"websocket": router})
    assert asyncio.iscoroutinefunction(app)
    assert inspect.iscoroutinefunction(app)
    for application in (router, protocol_router):
        assert asyncio.iscoroutinefunction(application.__call__)
        assert inspect.iscoroutinefunction(application.__call__)
    for application in (app, router, protocol_router):
        assert guarantee_single_callable(application) is application


async def test_the_outermost_router_mark_is_unset_when_the_connection_ends():
    """Set while the outermost router serves the connection, unset after, as reset() did."""
    seen = []

    async def http_app(scope, receive, send):
        seen.append(_outermost_router.get())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    application = ProtocolTypeRouter({"http": http_app})
    await application({"type": "http", "path": "/"}, receive, send)
    assert seen == [True]
    assert _outermost_router.get() is False
    await application({"type": "http", "path": "/"}, receive, send)  # outermost again
    assert seen == [True, True]
