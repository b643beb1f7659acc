"""consumers/revalidation.py: sockets re-checked when a subject they watch changes."""

import secrets

import pytest

from channels_layer import channel_layers
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.revalidation import (
    CLOSE_ACCESS_REVOKED,
    RevalidatingMixin,
    arecheck,
    group_for,
    recheck,
    subject_of,
)
from consumers.testing import WebsocketCommunicator
from tests.redis_servers import REDIS_URL

# Who may stay, by subject: what a database would answer in a real consumer.
allowed: dict[str, bool] = {}


class Watcher(RevalidatingMixin, AsyncWebsocketConsumer):
    async def connect(self):
        self.subject = self.scope["path"].strip("/")
        await self.watch(self.subject, "shared")
        await self.accept()
        self.checks = 0

    async def still_allowed(self):
        self.checks += 1
        await self.send(text_data=f"checked {self.checks}")
        return allowed.get(self.subject, True)

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=f"echo {text_data}")


async def watching(subject: str) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(Watcher.as_asgi(), f"/{subject}/")
    assert (await socket.connect())[0]
    return socket


@pytest.fixture(autouse=True)
def memory_layer(settings):
    allowed.clear()
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_layer.memory.InMemoryChannelLayer"}}
    channel_layers.reset()


async def test_a_socket_that_fails_its_re_check_is_closed_with_4403():
    kept, lost = await watching("room.1"), await watching("room.2")
    allowed["room.2"] = False
    await arecheck("room.2")
    assert await lost.receive_from() == "checked 1"
    assert await lost.receive_close() == (CLOSE_ACCESS_REVOKED, "access revoked")
    # Only the watchers of that subject were asked.
    assert await kept.receive_nothing()
    await kept.send_to("hi")
    assert await kept.receive_from() == "echo hi"
    await kept.disconnect()


async def test_a_socket_that_passes_stays_open():
    socket = await watching("room.1")
    await arecheck("shared")
    assert await socket.receive_from() == "checked 1"
    await socket.send_to("still here")
    assert await socket.receive_from() == "echo still here"
    await socket.disconnect()


async def test_leaving_stops_the_re_checks():
    socket = await watching("room.1")
    await socket.disconnect()
    layer = channel_layers["default"]
    # Left with the consumer's other groups.
    assert not list(layer._groups.live_members(group_for("room.1")))


@pytest.mark.django_db(transaction=True)
async def test_recheck_from_sync_code_runs_after_the_commit():
    from asgiref.sync import sync_to_async
    from django.db import transaction

    socket = await watching("room.1")
    allowed["room.1"] = False

    def change():
        with transaction.atomic():
            recheck("room.1")
            # Not yet: the change is not committed, a re-check would read the old state.
            assert socket.output_queue.empty()

    await sync_to_async(change)()
    assert await socket.receive_from() == "checked 1"
    assert (await socket.receive_close())[0] == CLOSE_ACCESS_REVOKED


@pytest.mark.django_db
def test_subjects_are_checked_and_built_from_models():
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create(username="ada")
    assert subject_of(user) == f"auth.user.{user.pk}"
    assert group_for(subject_of(user)) == f"revalidate.auth.user.{user.pk}"
    for bad in ("", "a b", "x" * 81, "é"):
        with pytest.raises(ValueError):
            recheck(bad)


async def test_a_recheck_from_another_process_arrives_through_redis(settings):
    """Two layer instances on one Redis prefix: the socket's, and the changer's."""
    config = {"hosts": [REDIS_URL], "prefix": f"test-revalidate-{secrets.token_hex(4)}"}
    backend = "channels_layer.redis.RedisChannelLayer"
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": backend, "CONFIG": config},
        "elsewhere": {"BACKEND": backend, "CONFIG": config},
    }
    channel_layers.reset()
    try:
        socket = await watching("room.9")
        allowed["room.9"] = False
        await arecheck("room.9", alias="elsewhere")
        assert await socket.receive_from(timeout=2) == "checked 1"
        assert (await socket.receive_close())[0] == CLOSE_ACCESS_REVOKED
    finally:
        for alias in ("default", "elsewhere"):
            await channel_layers[alias].flush()
            await channel_layers[alias].close()
