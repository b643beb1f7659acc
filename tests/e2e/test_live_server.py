"""ChannelsLiveServerTestCase: a real Daphne in another process, sharing the test database."""

from __future__ import annotations

import json
import urllib.request

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.templatetags.static import static
from django.test import Client
from websockets.sync.client import connect
from websockets.typing import Origin

from consumers.testing import ChannelsLiveServerTestCase
from consumers.testing.live import _shareable_databases

TIMEOUT = 5
# Loopback only: never through a proxy from the environment.
http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LiveServerTests(ChannelsLiveServerTestCase):
    def test_urls_point_at_the_bound_port(self) -> None:
        port = self.live_server_url.rsplit(":", 1)[1]
        assert int(port) > 0
        assert self.live_server_url == f"http://127.0.0.1:{port}"
        assert self.live_server_ws_url == f"ws://127.0.0.1:{port}"

    def test_serves_the_echo_page_over_http(self) -> None:
        with http.open(self.live_server_url + "/echo/", timeout=TIMEOUT) as response:
            assert response.status == 200
            html = response.read().decode()
        assert "<h1>WebSocket echo</h1>" in html

    def test_serves_static_files(self) -> None:
        url = self.live_server_url + static("admin/css/base.css")
        with http.open(url, timeout=TIMEOUT) as response:
            assert response.status == 200
            assert b"{" in response.read()

    def test_websocket_sees_a_user_from_the_test_database(self) -> None:
        user = get_user_model().objects.create_user("alice", password="not-used-here")
        client = Client()
        client.force_login(user)
        cookie = (
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )

        with connect(
            self.live_server_ws_url + "/ws/echo/",
            origin=Origin(self.live_server_url),
            additional_headers={"Cookie": cookie},
            open_timeout=TIMEOUT,
            proxy=None,
        ) as websocket:
            assert json.loads(websocket.recv(timeout=TIMEOUT)) == {
                "type": "welcome",
                "user": "alice",
            }
            websocket.send(json.dumps({"text": "hi"}))
            assert json.loads(websocket.recv(timeout=TIMEOUT)) == {
                "type": "echo",
                "message": {"text": "hi"},
            }

    def test_websocket_without_a_session_is_anonymous(self) -> None:
        with connect(
            self.live_server_ws_url + "/ws/echo/",
            origin=Origin(self.live_server_url),
            open_timeout=TIMEOUT,
            proxy=None,
        ) as websocket:
            assert json.loads(websocket.recv(timeout=TIMEOUT)) == {"type": "welcome", "user": None}


@pytest.mark.parametrize("name", [":memory:", "file:memorydb_default?mode=memory&cache=shared"])
def test_an_in_memory_test_database_is_refused(name: str) -> None:
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": name}}
    with pytest.raises(ImproperlyConfigured, match=r"DATABASES\['default'\]\['TEST'\]\['NAME'\]"):
        _shareable_databases(databases, ["default"])


def test_a_file_test_database_is_passed_on() -> None:
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/x.db"}}
    assert _shareable_databases(databases, ["default"]) == databases
