"""``ChannelsLiveServerTestCase``: tests against a real Daphne serving the project."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import TransactionTestCase
from django.utils.functional import classproperty

#: The environment variable that carries settings overrides, as JSON, to the server process.
SETTINGS_ENV = "CONSUMERS_LIVE_SERVER_SETTINGS"


class ChannelsLiveServerTestCase(TransactionTestCase):
    """A ``TransactionTestCase`` with a real Daphne server running the project's
    ``settings.ASGI_APPLICATION`` for the whole class, like Django's ``LiveServerTestCase``
    but with WebSockets.

    Point an HTTP client or a browser at ``live_server_url`` and a WebSocket client at
    ``live_server_ws_url``::

        class ChatTests(ChannelsLiveServerTestCase):
            def test_echo(self):
                url = self.live_server_ws_url + "/ws/echo/"
                with websockets.sync.client.connect(url, origin=self.live_server_url) as ws:
                    ...

    The server runs in a separate process (``python -m consumers.testing.serve``) bound to
    ``host`` on a port the OS picks, so test runs in parallel never collide. That process
    gets this process's ``DATABASES`` (by then naming the test databases) and
    ``ALLOWED_HOSTS`` plus ``host``; other settings come from the settings module as they
    are, so ``override_settings`` does not reach the server. Because another process must
    open the test databases, they cannot be in-memory SQLite: give each one a file, e.g.
    ``DATABASES["default"]["TEST"]["NAME"] = "/tmp/test-db.sqlite3"``.

    With ``serve_static`` (the default) the server also serves static files under
    ``STATIC_URL`` through ``ASGIStaticFilesHandler``, as ``runserver`` does.
    """

    host = "127.0.0.1"
    serve_static = True
    #: Seconds to wait for the server to listen, and for it to stop before it is killed.
    server_start_timeout = 20.0
    server_stop_timeout = 10.0

    _port: int | None = None

    @classproperty
    def live_server_url(cls) -> str:
        return f"http://{cls.host}:{cls._port}"

    @classproperty
    def live_server_ws_url(cls) -> str:
        return f"ws://{cls.host}:{cls._port}"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._start_server()

    @classmethod
    def _start_server(cls) -> None:
        if not settings.SETTINGS_MODULE:
            raise ImproperlyConfigured(
                "ChannelsLiveServerTestCase starts its server with DJANGO_SETTINGS_MODULE; "
                "settings made with settings.configure() cannot be passed on"
            )
        overrides = {
            "DATABASES": _shareable_databases(settings.DATABASES, cls.databases),
            "ALLOWED_HOSTS": [*settings.ALLOWED_HOSTS, cls.host],
        }
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE,
            # The server imports the project exactly as this process does.
            "PYTHONPATH": os.pathsep.join(os.path.abspath(path) for path in sys.path),
            SETTINGS_ENV: json.dumps(overrides, default=str),
        }
        command = [sys.executable, "-m", "consumers.testing.serve", "--host", cls.host]
        if cls.serve_static:
            command.append("--static")
        # stderr is inherited so that server errors show up with the test output; stdin is
        # only there to be closed, which stops the server even if this process is killed.
        # Our own command line (this Python, consumers.testing.serve), no shell.
        process = subprocess.Popen(  # noqa: S603
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
        )
        # A class cleanup runs even if setUpClass fails from here on.
        cls.addClassCleanup(_stop, process, cls.server_stop_timeout)
        cls._port = _wait_for_port(process, cls.server_start_timeout)


def _shareable_databases(databases: Mapping[str, Any], aliases: Iterable[str]) -> Mapping[str, Any]:
    """``databases``, checked that another process can open each of ``aliases``."""
    for alias in aliases:
        name = str(databases[alias]["NAME"])
        if name == ":memory:" or "mode=memory" in name:
            raise ImproperlyConfigured(
                f"The test database {alias!r} is in memory, so the live server process "
                f"cannot see it: set DATABASES[{alias!r}]['TEST']['NAME'] to a file path"
            )
    return databases


def _wait_for_port(process: subprocess.Popen[str], timeout: float) -> int:
    """The port from the server's ``LISTENING <host> <port>`` line."""
    # A thread, because a pipe read cannot time out; it ends when the server exits.
    items: queue.Queue[str | int] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None  # noqa: S101  for mypy: started with stdout=PIPE
        with process.stdout:
            for line in process.stdout:
                items.put(line)
        items.put(process.wait())

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            item = items.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            problem = f"did not start listening within {timeout} s"
            break
        if isinstance(item, int):
            problem = f"exited with code {item} before listening"
            break
        if item.startswith("LISTENING "):
            sys.stdout.write("".join(output))
            return int(item.split()[2])
        output.append(item)
    raise RuntimeError(
        f"The live Daphne server {problem} (see its stderr). "
        f"Its stdout:\n{''.join(output) or '(nothing)'}"
    )


def _stop(process: subprocess.Popen[str], timeout: float) -> None:
    """Ask the server to stop, kill it if it takes too long, and reap it."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdin is not None:
        process.stdin.close()
