"""BaseMiddleware: hands the inner application a private copy of the scope."""

from asgiref.testing import ApplicationCommunicator

from consumers.middleware import BaseMiddleware
from consumers.types import Receive, Scope, Send


class ScopeRecorder:
    """Inner application that keeps the scope it was called with."""

    def __init__(self) -> None:
        self.scope: Scope | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        await send({"type": "recorded"})


class AddsGreeting(BaseMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        scope["greeting"] = "hello"
        await super().__call__(scope, receive, send)


async def test_inner_app_gets_an_equal_copy_of_the_scope():
    inner = ScopeRecorder()
    scope = {"type": "http", "path": "/"}
    communicator = ApplicationCommunicator(BaseMiddleware(inner), scope)
    assert await communicator.receive_output() == {"type": "recorded"}
    await communicator.wait()
    assert inner.scope == scope
    assert inner.scope is not scope


async def test_inner_app_changes_do_not_leak_to_the_caller():
    class Mutates:
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope["added_by_inner"] = True

    scope = {"type": "http"}
    await BaseMiddleware(Mutates())(scope, _never_receive, _discard)
    assert scope == {"type": "http"}


async def test_subclass_adds_keys_through_super_call_without_touching_the_callers_scope():
    inner = ScopeRecorder()
    scope = {"type": "websocket"}
    await AddsGreeting(inner)(scope, _never_receive, _discard)
    assert inner.scope == {"type": "websocket", "greeting": "hello"}
    assert "greeting" not in scope


async def test_receive_and_send_reach_the_inner_app_unchanged():
    seen = {}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen["receive"], seen["send"] = receive, send

    await BaseMiddleware(inner)({"type": "http"}, _never_receive, _discard)
    assert seen == {"receive": _never_receive, "send": _discard}


async def _never_receive() -> dict:
    raise AssertionError("receive() should not be called")


async def _discard(message: dict) -> None:
    pass


async def test_the_middleware_stacks_return_what_the_application_returns():
    from consumers.auth import AuthMiddlewareStack
    from consumers.security.websocket import OriginValidator

    async def answer(scope, receive, send):
        return ("answer", scope["type"])

    app = OriginValidator(AuthMiddlewareStack(answer), ["*"])
    for kind in ("http", "websocket"):
        # No session cookie: the user is anonymous without a query.
        scope = {"type": kind, "path": "/", "headers": [(b"origin", b"http://x")]}
        assert await app(scope, None, None) == ("answer", kind)
    assert await BaseMiddleware(answer)({"type": "channel"}, None, None) == ("answer", "channel")
