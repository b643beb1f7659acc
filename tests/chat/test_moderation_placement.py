"""Unless ``CHAT_MODERATION_INLINE`` says otherwise, posts are reviewed where the layer
allows: by a worker when the layer declares that other processes reach it
(``cross_process``), else in the web process, since no worker could hear the job."""

import asyncio

from channels_layer import get_channel_layer
from chat.models import Message
from chat.moderation import MODERATION_CHANNEL

from .conftest import enter, next_of


async def test_a_layer_other_processes_cannot_reach_gets_its_posts_reviewed_inline(
    make_user, make_room, settings
):
    settings.CHAT_MODERATION_INLINE = None
    await make_room()
    socket = await enter(await make_user("ada"))
    await socket.send_json_to({"type": "message", "text": "reviewed here"})
    message = await next_of(socket, "message")
    verdict = await next_of(socket, "moderated")  # no worker runs: the web process did it
    assert (verdict["id"], verdict["status"]) == (message["id"], Message.VISIBLE)
    await socket.disconnect()


async def test_a_layer_declaring_cross_process_gets_its_posts_sent_to_the_worker(
    make_user, make_room, settings
):
    settings.CHAT_MODERATION_INLINE = None
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.layers.DeclaredCrossProcessLayer"}}
    await make_room()
    socket = await enter(await make_user("ada"))
    await socket.send_json_to({"type": "message", "text": "reviewed elsewhere"})
    message = await next_of(socket, "message")
    assert message["status"] == Message.PENDING
    job = await asyncio.wait_for(get_channel_layer().receive(MODERATION_CHANNEL), 2)
    assert job == {"type": "moderate", "id": message["id"]}
    await socket.disconnect()
