"""The reference project's ASGI stack, end to end in process, and its settings."""

import json
import sys

import pytest
from django.contrib.auth import get_user_model

from consumers.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from project.asgi import application
from testsupport.processes import ManagePy, Process


@pytest.mark.django_db(transaction=True)
async def test_echo_greets_the_logged_in_user():
    user = await get_user_model().objects.acreate(username="ada")
    socket = WebsocketCommunicator(application, "/ws/echo/", headers={"origin": "http://localhost"})
    await socket.force_login(user)
    assert await socket.connect() == (True, None)
    assert await socket.receive_json_from() == {"type": "welcome", "user": "ada"}
    await socket.disconnect()


async def test_echo_echoes_json_for_an_anonymous_visitor():
    socket = WebsocketCommunicator(application, "/ws/echo/", headers={"origin": "http://127.0.0.1"})
    assert await socket.connect() == (True, None)
    assert await socket.receive_json_from() == {"type": "welcome", "user": None}
    await socket.send_json_to({"text": "hello"})
    assert await socket.receive_json_from() == {"type": "echo", "message": {"text": "hello"}}
    await socket.disconnect()


async def test_a_foreign_origin_is_refused():
    socket = WebsocketCommunicator(
        application, "/ws/echo/", headers={"origin": "http://evil.example"}
    )
    assert await socket.connect() == (False, 1000)


@pytest.mark.django_db
async def test_the_echo_page_is_served_over_http():
    response = await HttpCommunicator(application, "GET", "/echo/").get_response()
    assert response["status"] == 200
    assert b"/static/project/echo.js" in response["body"]
    headers = {name.lower(): value for name, value in response["headers"]}
    # No inline script or style: the policy allows this site's files only.
    assert b"script-src" not in headers[b"content-security-policy"]
    assert headers[b"content-security-policy"].startswith(b"default-src 'self'; ")
    assert b"<script>" not in response["body"] and b"<style>" not in response["body"]


async def test_lifespan_is_answered_for_uvicorn_and_hypercorn():
    app = ApplicationCommunicator(application, {"type": "lifespan"})
    await app.send_input({"type": "lifespan.startup"})
    assert await app.receive_output() == {"type": "lifespan.startup.complete"}
    await app.send_input({"type": "lifespan.shutdown"})
    assert await app.receive_output() == {"type": "lifespan.shutdown.complete"}
    await app.wait()


# Production safety: the settings, loaded in a process of their own from the environment.

STRONG_KEY = "k" + "".join(chr(ord("a") + n % 26) for n in range(60))


def load_settings(env: dict[str, str], script: str) -> ManagePy:
    """``manage.py shell -c script`` with the project's settings and ``env``."""
    process = ManagePy(
        "shell", "-c", script, env={"DJANGO_SETTINGS_MODULE": "project.settings", **env}
    )
    process.process.wait(60)
    return process


@pytest.mark.parametrize(
    "key",
    ["", "dev-only-insecure-key-change-me", "change-me-insecure-compose-default", "short"],
)
def test_debug_off_refuses_to_start_without_a_strong_secret_key(key):
    env = {"DJANGO_SETTINGS_MODULE": "project.settings", "DJANGO_DEBUG": "0"}
    env["DJANGO_SECRET_KEY"] = key
    # What Daphne does first (the ASGI application), and a management command.
    for started in (
        Process(sys.executable, "-c", "import project.asgi", env=env),
        ManagePy("check", env=env),
    ):
        assert started.process.wait(60) != 0
        assert "refusing to start with DEBUG off" in started.output


def test_debug_is_off_unless_asked_for_and_on_only_with_1():
    script = "from django.conf import settings; print('DEBUG', settings.DEBUG)"
    for value, expected in (("", "False"), ("0", "False"), ("yes", "False"), ("1", "True")):
        # Unset and empty read the same (os.environ.get), so "" stands for unset here.
        env = {"DJANGO_SECRET_KEY": STRONG_KEY, "DJANGO_DEBUG": value or ""}
        started = load_settings(env, script)
        assert f"DEBUG {expected}\n" in started.lines, (value, started.output)


# What the project makes of REDIS_URL and REDIS_CLUSTER: the layer and the chat's limits.
REDIS_SETTINGS = """
import json
from django.conf import settings
layer = settings.CHANNEL_LAYERS["default"]
config = layer["CONFIG"]
chosen = [layer["BACKEND"].rsplit(".", 1)[1], config.get("hosts"), config.get("cluster")]
chosen += [settings.CHAT_LIMITS_REDIS_URL, settings.CHAT_LIMITS_REDIS_CLUSTER]
print("REDIS", json.dumps(chosen))
"""
NODE_1, NODE_2 = "rediss://:pw@redis-1.internal:7000", "rediss://:pw@redis-2.internal:7000"


@pytest.mark.parametrize(
    ("env", "layer", "hosts", "cluster", "limits_url"),
    [
        ({}, "InMemoryChannelLayer", None, None, None),
        ({"REDIS_URL": NODE_1}, "RedisChannelLayer", [NODE_1], False, NODE_1),
        ({"REDIS_URL": NODE_1, "REDIS_CLUSTER": "0"}, "RedisChannelLayer", [NODE_1], False, NODE_1),
        (
            {"REDIS_URL": NODE_1, "REDIS_CLUSTER": "1"},
            "RedisChannelLayer",
            [NODE_1],
            True,
            [NODE_1],
        ),
        (
            {"REDIS_URL": f"{NODE_1}, {NODE_2},", "REDIS_CLUSTER": "1"},
            "RedisChannelLayer",
            [NODE_1, NODE_2],
            True,
            [NODE_1, NODE_2],
        ),
    ],
    ids=["memory", "redis", "redis-cluster-0", "cluster", "cluster-seeds"],
)
def test_redis_url_and_redis_cluster_choose_the_layer_and_the_limits_store(
    env, layer, hosts, cluster, limits_url
):
    env = {"DJANGO_SECRET_KEY": STRONG_KEY, "REDIS_URL": None, "REDIS_CLUSTER": None, **env}
    started = load_settings(env, REDIS_SETTINGS)
    [line] = [line for line in started.lines if line.startswith("REDIS ")]
    assert json.loads(line.removeprefix("REDIS ")) == [
        layer,
        hosts,
        cluster,
        limits_url,
        bool(cluster),
    ], started.output


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({"REDIS_URL": NODE_1, "REDIS_CLUSTER": "yes"}, "REDIS_CLUSTER must be 1 or 0"),
        ({"REDIS_URL": None, "REDIS_CLUSTER": "1"}, "REDIS_CLUSTER=1 needs REDIS_URL"),
        ({"REDIS_URL": " , ", "REDIS_CLUSTER": "1"}, "REDIS_CLUSTER=1 needs REDIS_URL"),
    ],
)
def test_a_wrong_redis_cluster_switch_stops_the_project(env, refusal):
    started = load_settings({"DJANGO_SECRET_KEY": STRONG_KEY, **env}, REDIS_SETTINGS)
    assert started.process.returncode != 0
    assert refusal in started.output


RETRY_SETTINGS = """
from django.conf import settings
print("RETRY", settings.CHANNEL_LAYERS["default"]["CONFIG"]["retry_timeout"])
"""


@pytest.mark.parametrize(("value", "seconds"), [(None, 5.0), ("20", 20.0), ("2.5", 2.5)])
def test_redis_retry_timeout_sets_the_layers_wait_for_redis(value, seconds):
    env = {"DJANGO_SECRET_KEY": STRONG_KEY, "REDIS_URL": NODE_1, "REDIS_RETRY_TIMEOUT": value}
    started = load_settings(env, RETRY_SETTINGS)
    assert f"RETRY {seconds}" in [line.strip() for line in started.lines], started.output


@pytest.mark.parametrize("value", ["soon", "0", "-3", "99999"])
def test_a_wrong_redis_retry_timeout_stops_the_project(value):
    env = {"DJANGO_SECRET_KEY": STRONG_KEY, "REDIS_URL": NODE_1, "REDIS_RETRY_TIMEOUT": value}
    started = load_settings(env, RETRY_SETTINGS)
    assert started.process.returncode != 0
    assert "REDIS_RETRY_TIMEOUT must be seconds" in started.output


# Renders Django's debug page (what DEBUG shows on any 500) for a request that failed.
DEBUG_PAGE = """
import sys
from django.test import RequestFactory
from django.views.debug import technical_500_response
try:
    raise RuntimeError("boom")
except RuntimeError:
    page = technical_500_response(RequestFactory().get("/"), *sys.exc_info())
print(page.content.decode())
"""


@pytest.mark.parametrize(
    "redis",
    [
        {"REDIS_URL": "redis://:redis-hunter2@127.0.0.1:6379/0"},
        {
            "REDIS_URL": "redis://:redis-hunter2@127.0.0.1:7000,redis://:redis-hunter2@[::1]:7001",
            "REDIS_CLUSTER": "1",
        },
    ],
    ids=["redis", "cluster"],
)
def test_the_debug_page_never_prints_the_redis_or_database_password(redis):
    started = load_settings(
        {
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": "postgres://chat:db-hunter2@127.0.0.1:5432/chat",
            **redis,
        },
        DEBUG_PAGE,
    )
    assert started.process.returncode == 0, started.output
    assert "RuntimeError" in started.output and "CHANNEL_LAYERS" in started.output
    assert "redis-hunter2" not in started.output
    assert "db-hunter2" not in started.output


async def test_the_anonymous_echo_is_rate_limited_per_address(settings):
    from chat import limits

    limits.reset()
    settings.CHAT_ECHO_RATE = (1e-9, 3)
    settings.CHAT_STRIKES_BEFORE_CLOSE = 2
    sockets = []
    for _ in range(2):
        socket = WebsocketCommunicator(
            application, "/ws/echo/", headers={"origin": "http://127.0.0.1"}
        )
        assert (await socket.connect())[0]
        assert (await socket.receive_json_from())["type"] == "welcome"
        sockets.append(socket)
    first, second = sockets
    for number in range(3):  # the address's burst, spent on the first socket
        await first.send_json_to({"n": number})
        assert (await first.receive_json_from())["type"] == "echo"
    # A second socket from the same address gets nothing more.
    await second.send_json_to({"n": 3})
    assert await second.receive_json_from() == {"type": "error", "code": "rate_limited"}
    await second.send_json_to({"n": 4})
    assert (await second.receive_close())[0] == 4029
    await first.disconnect()
    limits.reset()


async def test_echo_sockets_count_towards_the_addresss_cap(settings):
    from chat import limits

    limits.reset()
    settings.CHAT_MAX_SOCKETS_PER_ADDRESS = 2
    origin = {"origin": "http://127.0.0.1"}
    sockets = [WebsocketCommunicator(application, "/ws/echo/", headers=origin) for _ in range(3)]
    for socket in sockets[:2]:
        assert (await socket.connect())[0]
        assert (await socket.receive_json_from())["type"] == "welcome"
    assert (await sockets[2].connect())[0]
    assert (await sockets[2].receive_close())[0] == 4030
    await sockets[0].disconnect()  # frees its slot
    again = WebsocketCommunicator(application, "/ws/echo/", headers=origin)
    assert (await again.connect())[0]
    assert (await again.receive_json_from())["type"] == "welcome"
    for socket in (sockets[1], again):
        await socket.disconnect()
    limits.reset()
