"""The deployment: the compose file, the Dockerfile, and deploy/nginx.conf run by the real
nginx in front of two stand-in Daphnes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.nginx import SITE_TEMPLATE, Nginx, nginx_binary, render_site_config
from testsupport.processes import ManagePy
from testsupport.system import free_port

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_VARIABLES = {"NGINX_PORT", "DAPHNE_1", "DAPHNE_2", "STATIC_ROOT"}
REQUIRED_SERVICES = {"redis", "postgres", "web1", "web2", "worker", "nginx"}
DAPHNE_COMMAND = "daphne --proxy-headers -b 0.0.0.0 -p 8000 project.asgi:application"

needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")


# --- The compose file, the Dockerfile ---------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def command(service: dict) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else list(value)


def environment(service: dict) -> dict[str, str]:
    value = service.get("environment", {})
    if isinstance(value, list):
        value = dict(item.split("=", 1) for item in value)
    return {name: str(setting) for name, setting in value.items()}


def depends_on(service: dict) -> dict[str, str]:
    """Each dependency and its condition."""
    value = service.get("depends_on", {})
    if isinstance(value, list):
        return dict.fromkeys(value, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in value.items()}


def mounts(service: dict) -> dict[str, str]:
    """Container path -> source (a named volume or a host path) of each short-form volume."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def migrating_service(compose: dict) -> str:
    """The one-shot service that runs ``manage.py migrate``."""
    names = [
        name
        for name, service in compose["services"].items()
        if {"manage.py", "migrate", "--noinput"} <= set(" ".join(command(service)).split())
    ]
    assert len(names) == 1, names
    return names[0]


def docker_compose_works() -> bool:
    try:
        result = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def test_docker_compose_accepts_the_file():
    if not docker_compose_works():
        pytest.skip("no docker compose here; the YAML-level tests below check the file")
    result = subprocess.run(
        ["docker", "compose", "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_stack_has_every_service(compose):
    assert set(compose["services"]) >= REQUIRED_SERVICES
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert compose["services"]["postgres"]["image"].startswith("postgres:16")
    assert compose["services"]["nginx"]["image"].startswith("nginx:1.27")


def test_both_web_services_run_daphne_behind_the_proxy_from_one_image(compose):
    services = compose["services"]
    for name in ("web1", "web2"):
        assert command(services[name]) == DAPHNE_COMMAND.split(), name
        env = environment(services[name])
        assert env["SERVER_NAME"] == name
        assert env["DJANGO_DEBUG"] == "0"
        # Required, with no default: compose refuses to start without it.
        assert env["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
        assert env["DJANGO_HTTPS"] == "${DJANGO_HTTPS:-1}"
        assert env["DJANGO_ALLOWED_HOSTS"]
        assert "http://localhost:8080" in env["DJANGO_CSRF_TRUSTED_ORIGINS"]
    # web1, web2, the worker and the migrations: all built from the same Dockerfile.
    builds = {
        str(services[name]["build"])
        for name in ("web1", "web2", "worker", migrating_service(compose))
    }
    assert len(builds) == 1, builds


def compose_value(value: str) -> str:
    """A compose environment value as compose would fill it in with nothing set, except a
    required ``${NAME:?...}``, which gets a strong random value."""
    value = re.sub(r"\$\{\w+:\?[^}]*\}", lambda _: secrets.token_urlsafe(50), value)
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_manage_py_check_deploy_is_clean_with_the_compose_settings(compose):
    env = {
        name: compose_value(value)
        for name, value in environment(compose["services"]["web1"]).items()
    }
    assert env["DJANGO_HTTPS"] == "1" and env["DJANGO_DEBUG"] == "0"
    check = ManagePy(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={**env, "DJANGO_SETTINGS_MODULE": "project.settings"},
    )
    assert check.process.wait(60) == 0, check.output
    assert "System check identified no issues (0 silenced)." in check.output


def test_the_worker_runs_the_moderation_channel(compose):
    worker = compose["services"]["worker"]
    assert command(worker) == ["python", "manage.py", "runworker", "chat-moderation"]


def test_every_process_shares_redis_and_postgres(compose):
    services = compose["services"]
    for name in ("web1", "web2", "worker", migrating_service(compose)):
        env = environment(services[name])
        # Without REDIS_URL each process would get its own in-memory layer.
        redis_url = urlsplit(env["REDIS_URL"])
        assert (redis_url.scheme, redis_url.hostname) == ("redis", "redis"), name
        database_url = urlsplit(env["DATABASE_URL"])
        assert database_url.scheme in {"postgres", "postgresql"}, name
        assert database_url.hostname == "postgres", name
        assert database_url.path == "/" + environment(services["postgres"])["POSTGRES_DB"]


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_health(compose):
    postgres = compose["services"]["postgres"]
    assert mounts(postgres)["/var/lib/postgresql/data"] in compose["volumes"]
    assert "healthcheck" in postgres


def test_migrations_run_once_before_web_and_worker(compose):
    migrate = migrating_service(compose)
    assert compose["services"][migrate].get("restart") in {"no", None}
    for name in ("web1", "web2", "worker"):
        conditions = depends_on(compose["services"][name])
        assert conditions[migrate] == "service_completed_successfully", name
        assert conditions["postgres"] == "service_healthy", name
        assert conditions["redis"] == "service_healthy", name


def test_every_dependency_exists_and_health_conditions_have_a_healthcheck(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, (name, dependency)
            assert dependency != name
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }, (name, condition)
            if condition == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check and not check.get("disable"), (name, dependency)


def test_nginx_renders_the_deploy_template_with_every_variable(compose):
    nginx = compose["services"]["nginx"]
    assert "8080:80" in [str(port) for port in nginx["ports"]]
    volumes = mounts(nginx)
    assert volumes["/etc/nginx/templates/default.conf.template"] == "./deploy/nginx.conf"
    env = environment(nginx)
    used = set(re.findall(r"\$\{(\w+)\}", SITE_TEMPLATE.read_text()))
    assert used == TEMPLATE_VARIABLES
    assert set(env) >= used
    assert env["NGINX_PORT"] == "80"
    # The upstreams are the two Daphne services, which must be up for nginx to resolve them.
    for variable, service in (("DAPHNE_1", "web1"), ("DAPHNE_2", "web2")):
        assert env[variable] == f"{service}:8000"
        assert service in depends_on(nginx)


def test_nginx_serves_the_static_files_the_one_shot_step_collects(compose):
    services = compose["services"]
    nginx_volume = mounts(services["nginx"])[environment(services["nginx"])["STATIC_ROOT"]]
    assert nginx_volume in compose["volumes"]
    migrate = services[migrating_service(compose)]
    assert "collectstatic --noinput" in " ".join(command(migrate))
    # The image's STATIC_ROOT (where collectstatic writes) is the same volume.
    assert mounts(migrate)["/app/staticfiles"] == nginx_volume
    assert depends_on(services["nginx"])[migrating_service(compose)] == (
        "service_completed_successfully"
    )


def test_the_dockerfile_installs_the_package_before_its_requirements(compose):
    build = compose["services"]["web1"]["build"]
    dockerfile = ROOT / build["context"] / build.get("dockerfile", "Dockerfile")
    assert dockerfile.is_file()
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    install = next(
        i for i, line in enumerate(instructions) if "pip install -r requirements.txt" in line
    )
    copied = " ".join(line for line in instructions[:install] if line.startswith("COPY"))
    # requirements.txt has `-e .`: pip needs the package's files, not only the list.
    for needed in ("requirements.txt", "pyproject.toml", "consumers/", "channels_layer/"):
        assert needed in copied, needed
    assert any("collectstatic --noinput" in line for line in instructions)
    assert "STATIC_ROOT=/app/staticfiles" in dockerfile.read_text()
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert "EXPOSE 8000" in instructions


def test_the_build_context_leaves_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text()
    for pattern in (".venv", ".git", "bench/.venv-channels", "sqlite3", "__pycache__"):
        assert pattern in ignored, pattern
    # Compose reads DJANGO_SECRET_KEY from .env: it must never be copied into the image.
    assert ".env" in ignored.splitlines()


# --- The nginx template ------------------------------------------------------------------


def test_the_template_has_only_the_four_placeholders_and_nginx_variables():
    text = SITE_TEMPLATE.read_text()
    assert set(re.findall(r"\$\{([^}]*)\}", text)) == TEMPLATE_VARIABLES
    # The nginx image's envsubst also replaces $NAME for every defined environment variable:
    # nginx's own variables are lower case, environment variables upper case.
    for name in re.findall(r"\$(?!\{)(\w+)", text):
        assert name == name.lower(), name


def test_rendering_replaces_exactly_the_given_names():
    values = {
        "NGINX_PORT": "8080",
        "DAPHNE_1": "127.0.0.1:8101",
        "DAPHNE_2": "unix:/run/chat/daphne-2.sock",
        "STATIC_ROOT": "/srv/static",
    }
    text = render_site_config(values)
    assert "listen 8080;" in text
    assert "server 127.0.0.1:8101 max_fails=1" in text
    assert "server unix:/run/chat/daphne-2.sock max_fails=1" in text
    assert "alias /srv/static/;" in text
    assert "$http_upgrade" in text and "X-Forwarded-For $remote_addr" in text
    with pytest.raises(ValueError, match="STATIC_ROOT"):
        render_site_config({name: values[name] for name in values if name != "STATIC_ROOT"})


@needs_nginx
def test_nginx_accepts_the_rendered_config(tmp_path):
    output = Nginx(
        free_port(), ("127.0.0.1:8101", f"unix:{tmp_path}/d.sock"), tmp_path, tmp_path / "nginx"
    ).check_config()
    assert "test is successful" in output


# --- Live: the real nginx in front of two stand-in Daphnes --------------------------------


@dataclass
class Request:
    line: str
    headers: dict[str, str]  # names in lower case


class StandIn:
    """A stand-in for Daphne on TCP or a Unix socket, its asyncio loop in a thread: records
    each request's head; answers a WebSocket upgrade with 101 and then echoes raw bytes,
    anything else with 200 and its name."""

    def __init__(self, name: str, unix_path: Path | None = None) -> None:
        self.name = name
        self.unix_path = unix_path
        self.requests: list[Request] = []
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> StandIn:
        self._thread.start()
        if self.unix_path is not None:
            listen = asyncio.start_unix_server(self._handle, str(self.unix_path))
            self.address = f"unix:{self.unix_path}"
        else:
            listen = asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(listen, self._loop).result(5)
        if self.unix_path is None:
            self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection, then the loop."""
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            line, *fields = head.rstrip("\r\n").split("\r\n")
            headers = {}
            for field in fields:
                name, _, value = field.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.requests.append(Request(line, headers))
            if headers.get("upgrade", "").lower() == "websocket":
                digest = hashlib.sha1(  # RFC 6455's accept key, not a security hash
                    headers["sec-websocket-key"].encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
                    usedforsecurity=False,
                ).digest()
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + base64.b64encode(digest)
                    + b"\r\n\r\n"
                )
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            else:
                body = self.name.encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@dataclass
class Site:
    nginx: Nginx
    daphnes: tuple[StandIn, StandIn]
    static_root: Path

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        """Status, Content-Type and body of a GET through nginx."""
        connection = http.client.HTTPConnection("127.0.0.1", self.nginx.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            connection.close()

    def requests(self) -> list[Request]:
        return self.daphnes[0].requests + self.daphnes[1].requests


@contextlib.contextmanager
def websocket(port: int, path: str) -> Iterator[tuple[bytes, socket.socket]]:
    """A WebSocket handshake through nginx: the response head and the open socket."""
    key = base64.b64encode(b"0123456789abcdef").decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: http://localhost:{port}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            assert chunk, f"connection closed after {head!r}"
            head += chunk
        yield head, connection


@pytest.fixture
def site(tmp_path) -> Iterator[Site]:
    # A short directory: a Unix socket path must fit in 108 bytes.
    sockets = Path(tempfile.mkdtemp(prefix="ngx-"))
    static_root = tmp_path / "static"
    (static_root / "chat").mkdir(parents=True)
    daphnes: list[StandIn] = []
    nginx = None
    try:
        daphnes.append(StandIn("daphne-1").start())
        daphnes.append(StandIn("daphne-2", unix_path=sockets / "daphne-2.sock").start())
        nginx = Nginx(
            free_port(), (daphnes[0].address, daphnes[1].address), static_root, tmp_path / "nginx"
        ).start()
        yield Site(nginx, (daphnes[0], daphnes[1]), static_root)
    finally:
        if nginx is not None:
            nginx.stop()
        for daphne in daphnes:
            daphne.stop()
        shutil.rmtree(sockets, ignore_errors=True)


@needs_nginx
def test_http_reaches_daphne_with_the_forwarded_headers(site):
    status, _, body = site.get("/chat/lobby/", {"Host": "chat.example:8080"})
    assert status == 200
    assert body in {b"daphne-1", b"daphne-2"}
    [request] = site.requests()
    assert request.line.startswith("GET /chat/lobby/ HTTP/1.")
    assert request.headers["host"] == "chat.example:8080"
    assert request.headers["x-forwarded-for"] == "127.0.0.1"
    assert request.headers["x-forwarded-proto"] == "http"
    assert request.headers["x-real-ip"] == "127.0.0.1"
    # A client cannot choose its address: nginx replaces the header it sent.
    site.get("/", {"X-Forwarded-For": "203.0.113.7"})
    assert site.requests()[-1].headers["x-forwarded-for"] == "127.0.0.1"


@needs_nginx
def test_a_websocket_handshake_is_upgraded_and_tunnelled(site):
    with websocket(site.nginx.port, "/ws/x/") as (head, connection):
        assert head.startswith(b"HTTP/1.1 101 "), head
        [request] = site.requests()
        assert request.line == "GET /ws/x/ HTTP/1.1"
        assert request.headers["upgrade"] == "websocket"
        assert request.headers["connection"] == "upgrade"
        assert request.headers["host"] == f"localhost:{site.nginx.port}"
        assert request.headers["origin"] == f"http://localhost:{site.nginx.port}"
        assert request.headers["x-forwarded-for"] == "127.0.0.1"
        assert request.headers["x-forwarded-proto"] == "http"
        # After the 101 nginx only relays bytes, both ways.
        connection.sendall(b"\x81\x02hi")
        assert connection.recv(4096) == b"\x81\x02hi"


@needs_nginx
def test_a_plain_request_under_ws_is_not_marked_as_an_upgrade(site):
    status, _, _ = site.get("/ws/x/")
    assert status == 200
    [request] = site.requests()
    assert "upgrade" not in request.headers
    assert request.headers["connection"] == "close"


@needs_nginx
def test_static_files_are_served_by_nginx_alone(site):
    (site.static_root / "chat" / "chat.css").write_text("body { color: red; }\n")
    status, content_type, body = site.get("/static/chat/chat.css")
    assert (status, content_type, body) == (200, "text/css", b"body { color: red; }\n")
    assert site.get("/static/chat/missing.js")[0] == 404
    assert site.requests() == []


@needs_nginx
def test_connections_are_spread_over_both_daphnes(site):
    served = {site.get(f"/{i}")[2] for i in range(6)}
    assert served == {b"daphne-1", b"daphne-2"}


@needs_nginx
@pytest.mark.parametrize("dead", [0, 1])
def test_a_dead_daphne_is_skipped(site, dead):
    site.daphnes[dead].stop()
    alive = site.daphnes[1 - dead]
    for i in range(6):
        status, _, body = site.get(f"/{i}")
        assert (status, body) == (200, alive.name.encode())
    with websocket(site.nginx.port, "/ws/x/") as (head, _):
        assert head.startswith(b"HTTP/1.1 101 "), head
    assert len(alive.requests) == 7


@needs_nginx
def test_nginx_limits_logins_handshakes_and_requests_per_address(site):
    logins = [site.get("/accounts/login/")[0] for _ in range(15)]
    assert logins[:10] == [200] * 10 and logins[-1] == 429, logins
    handshakes = [site.get("/ws/x/")[0] for _ in range(30)]
    assert handshakes[:20] == [200] * 20 and handshakes[-1] == 429, handshakes
    pages = [site.get(f"/{n}")[0] for n in range(60)]
    assert pages[:40] == [200] * 40 and pages[-1] == 429, pages


@needs_nginx
def test_nginx_does_not_name_its_version(site):
    connection = http.client.HTTPConnection("127.0.0.1", site.nginx.port, timeout=10)
    connection.request("GET", "/static/missing")
    response = connection.getresponse()
    assert response.getheader("Server") == "nginx"
    assert b"nginx/" not in response.read()
    connection.close()
