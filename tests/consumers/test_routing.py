"""Protocol, URL and channel-name routing."""

import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import path, re_path

from consumers.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
    get_default_application,
)
from consumers.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator


def named(name):
    """An ASGI app that accepts a WebSocket and reports its name and url_route."""

    async def app(scope, receive, send):
        message = await receive()
        if scope["type"] == "websocket":
            assert message["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
        await send({"type": "report", "name": name, "url_route": scope.get("url_route")})

    return app


async def route(application, path, scope_type="websocket", **scope):
    app = ApplicationCommunicator(
        application, {"type": scope_type, "path": path, "headers": [], **scope}
    )
    await app.send_input({"type": "websocket.connect"})
    first = await app.receive_output()
    return await app.receive_output() if first["type"] == "websocket.accept" else first


async def test_protocol_type_router_picks_the_app_for_the_scope_type():
    router = ProtocolTypeRouter({"websocket": named("ws"), "http": named("http")})
    assert (await route(router, "/"))["name"] == "ws"
    assert (await route(router, "/", scope_type="http"))["name"] == "http"


async def test_protocol_type_router_refuses_unknown_scope_types():
    router = ProtocolTypeRouter({"http": named("http")})
    with pytest.raises(ValueError, match="No application configured for scope type 'websocket'"):
        await router({"type": "websocket"}, None, None)


async def test_lifespan_is_answered_when_no_app_handles_it():
    app = ApplicationCommunicator(ProtocolTypeRouter({"http": named("http")}), {"type": "lifespan"})
    await app.send_input({"type": "lifespan.startup"})
    assert await app.receive_output() == {"type": "lifespan.startup.complete"}
    await app.send_input({"type": "lifespan.shutdown"})
    assert await app.receive_output() == {"type": "lifespan.shutdown.complete"}
    await app.wait()


async def test_path_converters_and_regex_groups_fill_url_route():
    router = URLRouter(
        [
            path("rooms/<int:room>/", named("room")),
            re_path(r"^files/(\d+)/(?P<name>\w+)/$", named("file")),
            re_path(r"^plain/(\d+)/$", named("plain")),
        ]
    )
    room = await route(router, "/rooms/42/")
    assert (room["name"], room["url_route"]) == ("room", {"args": (), "kwargs": {"room": 42}})
    named_group = await route(router, "/files/7/readme/")
    assert named_group["url_route"]["kwargs"] == {"name": "readme"}
    positional = await route(router, "/plain/9/")
    assert positional["url_route"] == {"args": ("9",), "kwargs": {}}


async def test_nested_routers_match_prefixes_and_merge_arguments():
    inner = URLRouter([path("messages/<slug:kind>/", named("inner"))])
    router = URLRouter(
        [
            path("chat/<int:room>/", inner),
            path("chat/<int:room>/other/", named("other")),
            path("static/", named("static"), {"flavour": "fixed"}),
        ]
    )
    nested = await route(router, "/chat/5/messages/new/")
    assert nested["name"] == "inner"
    assert nested["url_route"]["kwargs"] == {"room": 5, "kind": "new"}
    # The nested router matched the prefix but not the rest: the next route is tried.
    assert (await route(router, "/chat/5/other/"))["name"] == "other"
    assert (await route(router, "/static/"))["url_route"]["kwargs"] == {"flavour": "fixed"}


async def test_root_path_is_stripped_before_matching():
    router = URLRouter([path("ws/echo/", named("echo"))])
    found = await route(router, "/prefix/ws/echo/", root_path="/prefix")
    assert found["name"] == "echo"


@pytest.mark.parametrize("scope_type", ["websocket", "http"])
async def test_a_url_router_called_directly_raises_value_error_as_channels_does(scope_type):
    router = URLRouter([path("ws/echo/", named("echo"))])
    with pytest.raises(ValueError, match="No route found for path '/ws/nowhere/'"):
        await router({"type": scope_type, "path": "/ws/nowhere/"}, None, None)


async def test_a_path_outside_root_path_matches_nothing():
    router = URLRouter([path("ws/echo/", named("echo"))])
    scope = {"type": "websocket", "path": "/ws/echo/", "root_path": "/prefix"}
    with pytest.raises(ValueError, match="No route found"):
        await router(scope, None, None)


async def test_unmatched_websocket_path_under_a_protocol_router_is_refused_with_one_log_line(
    caplog,
):
    router = ProtocolTypeRouter({"websocket": URLRouter([path("ws/echo/", named("echo"))])})
    with caplog.at_level(logging.WARNING, logger="consumers.routing"):
        socket = WebsocketCommunicator(router, "/ws/nowhere/")
        assert await socket.connect() == (False, 1000)
        await socket.wait()
    assert [r.getMessage() for r in caplog.records] == [
        "No route for websocket path '/ws/nowhere/'"
    ]
    assert (await route(router, "/ws/echo/"))["name"] == "echo"


async def test_unmatched_http_path_under_a_protocol_router_is_a_404():
    router = ProtocolTypeRouter({"http": URLRouter([path("ws/echo/", named("echo"))])})
    response = await HttpCommunicator(router, "GET", "/missing/").get_response()
    assert (response["status"], response["body"]) == (404, b"Not Found")


async def test_only_the_outermost_protocol_router_answers_an_unmatched_path(caplog):
    urls = URLRouter([path("ws/echo/", named("echo"))])
    inner = ProtocolTypeRouter({"websocket": urls})
    outer = ProtocolTypeRouter({"websocket": AuthLikeMiddleware(inner)})
    with caplog.at_level(logging.WARNING, logger="consumers.routing"):
        assert await WebsocketCommunicator(outer, "/nope/").connect() == (False, 1000)
    assert len(caplog.records) == 1


async def test_other_value_errors_of_the_application_are_not_swallowed():
    async def broken(scope, receive, send):
        raise ValueError("the application's own bug")

    router = ProtocolTypeRouter({"websocket": URLRouter([path("ws/", broken)])})
    with pytest.raises(ValueError, match="own bug"):
        await WebsocketCommunicator(router, "/ws/").connect()


async def test_routers_return_what_the_application_returns():
    async def answer(scope, receive, send):
        return ("answer", scope.get("url_route"))

    urls = URLRouter([path("ws/<int:n>/", answer)])
    protocol = ProtocolTypeRouter({"websocket": urls})
    expected = ("answer", {"args": (), "kwargs": {"n": 7}})
    assert await urls({"type": "websocket", "path": "/ws/7/"}, None, None) == expected
    assert await protocol({"type": "websocket", "path": "/ws/7/"}, None, None) == expected
    channels = ChannelNameRouter({"jobs": answer})
    assert await channels({"type": "channel", "channel": "jobs"}, None, None) == ("answer", None)


class AuthLikeMiddleware:
    """A pass-through wrapper, as middleware stands between routers in real applications."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        return await self.inner(dict(scope), receive, send)


def test_include_is_refused_with_a_hint():
    from django.urls import include

    with pytest.raises(ImproperlyConfigured, match="nest another URLRouter"):
        URLRouter([path("x/", include([path("y/", named("y"))]))])


async def test_channel_name_router_routes_by_channel():
    router = ChannelNameRouter({"thumbnails": named("thumbs")})
    app = ApplicationCommunicator(router, {"type": "channel", "channel": "thumbnails"})
    await app.send_input({"type": "job"})
    assert (await app.receive_output())["name"] == "thumbs"


@pytest.mark.parametrize(
    ("scope", "complaint"),
    [
        ({"type": "channel"}, "without 'channel'"),
        ({"type": "channel", "channel": "nope"}, "No application configured for channel 'nope'"),
    ],
)
async def test_channel_name_router_refuses_unknown_or_missing_channels(scope, complaint):
    with pytest.raises(ValueError, match=complaint):
        await ChannelNameRouter({"thumbnails": named("thumbs")})(scope, None, None)


def test_default_application_is_the_one_in_settings():
    from project.asgi import application

    assert get_default_application() is application


def test_default_application_needs_the_setting(settings):
    del settings.ASGI_APPLICATION
    with pytest.raises(ImproperlyConfigured, match="ASGI_APPLICATION is not set"):
        get_default_application()


async def test_an_application_marked_path_routing_gets_the_rest_of_the_path():
    class RestReporter:
        """A router of another library, marked as Channels marks its URLRouter."""

        _path_routing = True

        async def __call__(self, scope, receive, send):
            return scope["path_remaining"], scope["url_route"]

    router = URLRouter([path("api/<int:version>/", RestReporter())])
    remaining, url_route = await router({"type": "http", "path": "/api/2/users/7/"}, None, None)
    assert remaining == "users/7/"
    assert url_route == {"args": (), "kwargs": {"version": 2}}
    assert URLRouter._path_routing is True
