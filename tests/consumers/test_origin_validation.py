"""OriginValidator, AllowedHostsOriginValidator and WebsocketDenier."""

import asyncio
import logging
from urllib.parse import urlsplit

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.exceptions import DisallowedHost
from django.test import RequestFactory, override_settings

from consumers.security.websocket import (
    AllowedHostsOriginValidator,
    OriginValidator,
    WebsocketDenier,
)
from consumers.types import Receive, Scope, Send


class AcceptingApp:
    """Accepts every handshake and counts how often it was called."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.disconnect":
                return


def websocket_scope(*origins: str) -> Scope:
    headers = [(b"host", b"example.com")] + [(b"origin", o.encode("latin-1")) for o in origins]
    return {"type": "websocket", "path": "/ws/chat/", "headers": headers}


async def handshake(validator, *origins: str) -> dict:
    """Open a connection with the given Origin header(s); return the app's reply."""
    communicator = ApplicationCommunicator(validator, websocket_scope(*origins))
    await communicator.send_input({"type": "websocket.connect"})
    reply = await communicator.receive_output()
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait()
    return reply


ACCEPT = {"type": "websocket.accept"}
CLOSE = {"type": "websocket.close"}


@pytest.mark.parametrize(
    ("allowed", "origin"),
    [
        (["example.com"], "https://example.com"),
        (["example.com"], "http://example.com:8080"),
        (["EXAMPLE.com"], "https://Example.COM"),
        (["example.com"], "https://example.com."),
        ([".example.com"], "https://example.com"),
        ([".example.com"], "https://chat.eu.example.com"),
        (["https://example.com"], "https://example.com"),
        (["https://example.com"], "https://example.com:443"),
        (["http://example.com"], "http://example.com:80"),
        (["https://.example.com"], "https://chat.example.com"),
        (["example.com:8443"], "https://example.com:8443"),
        (["example.com:443"], "https://example.com"),
        (["http://example.com:8000"], "http://example.com:8000"),
        (["[::1]"], "http://[::1]:8000"),
        (["[::1]:8000"], "http://[::1]:8000"),
        (["https://[2001:db8::1]"], "https://[2001:db8::1]"),
        (["127.0.0.1"], "http://127.0.0.1:3000"),
        (["other.org", "example.com"], "https://example.com"),
    ],
)
async def test_allowed_origin_reaches_the_app(allowed, origin):
    app = AcceptingApp()
    assert await handshake(OriginValidator(app, allowed), origin) == ACCEPT
    assert app.calls == 1


@pytest.mark.parametrize(
    ("allowed", "origin"),
    [
        (["example.com"], "https://evil.com"),
        (["example.com"], "https://chat.example.com"),
        (["example.com"], "https://example.com.evil.com"),
        ([".example.com"], "https://badexample.com"),
        (["https://example.com"], "http://example.com"),
        (["https://example.com"], "https://example.com:8443"),
        (["example.com:8443"], "https://example.com"),
        (["example.com:8443"], "https://example.com:9443"),
        (["[::1]:8000"], "http://[::1]:9000"),
        (["[::1]"], "http://[::2]"),
        (["localhost"], "http://127.0.0.1"),
    ],
)
async def test_foreign_origin_is_refused_without_calling_the_app(allowed, origin):
    app = AcceptingApp()
    assert await handshake(OriginValidator(app, allowed), origin) == CLOSE
    assert app.calls == 0


@pytest.mark.parametrize(
    "origins",
    [
        (),
        ("null",),
        ("example.com",),
        ("not an origin",),
        ("https://exa mple.com",),
        ("https://example.com/path",),
        ("https://example.com:99999",),
        ("https://user@example.com",),
        ("https://.example.com",),
        ("https://",),
        ("https://example.com", "https://example.com"),
    ],
)
async def test_missing_null_malformed_or_repeated_origin_is_refused(origins):
    app = AcceptingApp()
    assert await handshake(OriginValidator(app, [".example.com"]), *origins) == CLOSE
    assert app.calls == 0


@pytest.mark.parametrize("origins", [(), ("null",), ("https://anything.test:1234",), ("junk",)])
async def test_star_allows_any_origin_even_none(origins):
    app = AcceptingApp()
    assert await handshake(OriginValidator(app, ["*"]), *origins) == ACCEPT
    assert app.calls == 1


async def test_refusal_is_logged_on_one_line_with_origin_and_path(caplog):
    with caplog.at_level(logging.INFO, logger="consumers.security"):
        await handshake(OriginValidator(AcceptingApp(), ["example.com"]), "https://evil.com")
    [record] = [r for r in caplog.records if r.name == "consumers.security"]
    assert record.levelno == logging.WARNING
    assert "https://evil.com" in record.getMessage()
    assert "/ws/chat/" in record.getMessage()
    assert "\n" not in record.getMessage()
    assert record.exc_info is None


@pytest.mark.parametrize("scope_type", ["http", "lifespan"])
async def test_non_websocket_scopes_pass_through_unchecked(scope_type):
    seen = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    scope = {"type": scope_type, "headers": [(b"origin", b"https://evil.com")]}
    await OriginValidator(app, ["example.com"])(scope, None, None)
    assert seen == [scope]


def test_a_single_string_instead_of_a_list_is_refused():
    with pytest.raises(TypeError, match="list of patterns"):
        OriginValidator(AcceptingApp(), "example.com")


@pytest.mark.parametrize(
    "pattern", ["https://example.com/", "example.com:http", "", "exa mple.com"]
)
def test_malformed_patterns_are_refused_at_construction(pattern):
    with pytest.raises(ValueError, match="not an allowed-origin pattern"):
        OriginValidator(AcceptingApp(), [pattern])


# --- AllowedHostsOriginValidator --------------------------------------------------------


async def test_allowed_hosts_validator_uses_allowed_hosts_on_any_port():
    with override_settings(ALLOWED_HOSTS=[".example.com", "[::1]"], DEBUG=False):
        validator = AllowedHostsOriginValidator(AcceptingApp())
    assert await handshake(validator, "https://chat.example.com:8443") == ACCEPT
    assert await handshake(validator, "http://[::1]:8000") == ACCEPT
    assert await handshake(validator, "https://evil.com") == CLOSE


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:8000", "http://app.localhost", "http://127.0.0.1:3000", "http://[::1]:8000"],
)
async def test_allowed_hosts_validator_allows_local_origins_in_debug_with_empty_allowed_hosts(
    origin,
):
    with override_settings(ALLOWED_HOSTS=[], DEBUG=True):
        validator = AllowedHostsOriginValidator(AcceptingApp())
    assert await handshake(validator, origin) == ACCEPT
    assert await handshake(validator, "http://example.com") == CLOSE


async def test_allowed_hosts_validator_refuses_everything_with_empty_allowed_hosts_in_production():
    with override_settings(ALLOWED_HOSTS=[], DEBUG=False):
        validator = AllowedHostsOriginValidator(AcceptingApp())
    assert await handshake(validator, "http://localhost") == CLOSE


async def test_allowed_hosts_star_allows_everything():
    with override_settings(ALLOWED_HOSTS=["*"], DEBUG=False):
        validator = AllowedHostsOriginValidator(AcceptingApp())
    assert await handshake(validator) == ACCEPT


ALLOWED_HOSTS_CASES = [
    (False, ["localhost", "127.0.0.1", "[::1]"]),  # the project's default
    (False, [".example.com"]),
    (False, ["example.com", "chat.example.org"]),
    (False, ["*"]),
    (True, []),  # DEBUG without ALLOWED_HOSTS: Django allows .localhost, 127.0.0.1, [::1]
]
WELL_FORMED_ORIGINS = [
    "http://localhost",
    "http://localhost:8000",
    "https://localhost:443",
    "http://LocalHost",
    "http://localhost.",
    "http://app.localhost:3000",
    "http://localhost.evil.com",
    "http://evil-localhost",
    "http://127.0.0.1:3000",
    "http://127.0.0.2",
    "http://127.0.0.1.evil.com",
    "http://[::1]:8000",
    "http://[::2]",
    "http://[::ffff:127.0.0.1]",
    "https://example.com",
    "https://www.example.com:8443",
    "https://example.com.evil.com",
    "https://badexample.com",
    "https://chat.example.org",
    "https://www.chat.example.org",
    "https://example.org",
    "http://xn--lcalhost-nbh",
]


def django_allows_host(netloc: str) -> bool:
    """Whether Django itself would serve a request whose Host header is ``netloc``."""
    try:
        RequestFactory().get("/", HTTP_HOST=netloc).get_host()
    except DisallowedHost:
        return False
    return True


@pytest.mark.parametrize(("debug", "allowed_hosts"), ALLOWED_HOSTS_CASES)
async def test_the_origin_check_follows_djangos_allowed_hosts(debug, allowed_hosts):
    """AllowedHostsOriginValidator admits an Origin exactly when Django would serve its
    host[:port] as a Host header (scheme and port ignored, ".domain" for subdomains, exact
    names otherwise, case-insensitive, trailing dot ignored, DEBUG's localhost default);
    whatever is not a browser's scheme://host[:port] is refused unless "*" is allowed."""
    with override_settings(DEBUG=debug, ALLOWED_HOSTS=allowed_hosts):
        validator = AllowedHostsOriginValidator(AcceptingApp())
        mismatches = []
        for origin in WELL_FORMED_ORIGINS:
            expected = django_allows_host(urlsplit(origin).netloc)
            if (await handshake(validator, origin) == ACCEPT) != expected:
                mismatches.append((origin, expected))
    assert mismatches == []
    malformed = [None, "null", "http://evil.com/localhost", "http://localhost@evil.com", "x"]
    for origin in malformed:
        origins = [] if origin is None else [origin]
        assert (await handshake(validator, *origins) == ACCEPT) is (allowed_hosts == ["*"]), origin


# --- WebsocketDenier --------------------------------------------------------------------


@pytest.mark.parametrize("make", [WebsocketDenier, WebsocketDenier.as_asgi])
async def test_denier_closes_the_handshake_and_ends_on_disconnect(make):
    communicator = ApplicationCommunicator(make(), websocket_scope())
    await communicator.send_input({"type": "websocket.connect"})
    assert await communicator.receive_output() == CLOSE
    await communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    # wait() would cancel a hung app quietly; this fails unless the denier returns itself.
    await asyncio.wait_for(communicator.future, timeout=1)
    assert await communicator.receive_nothing()
