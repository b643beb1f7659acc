"""Background workers and the runworker command."""

import asyncio
import threading

import pytest
from django.core.management import CommandError, call_command

from channels_layer import get_channel_layer
from channels_layer.redis import RedisChannelLayer
from consumers.consumer import AsyncConsumer, SyncConsumer
from consumers.routing import ChannelNameRouter
from consumers.worker import Worker
from tests.redis_servers import REDIS_URL
from testsupport.processes import ManagePy


class Jobs(SyncConsumer):
    done: list = []
    meeting = threading.Barrier(2)

    def job_run(self, message):
        payload = message["payload"]
        if payload == "crash":
            raise RuntimeError("bad job")
        if payload == "meet":
            # Only two jobs running at the same time get past this.
            try:
                type(self).meeting.wait(timeout=3)
            except threading.BrokenBarrierError:
                payload = "ran alone"
        type(self).done.append((payload, threading.current_thread().name))


async def run_worker(channels, *, concurrency=1, until, timeout=5):
    """Run a worker over the default layer until ``until()`` is true, then stop it."""
    router = ChannelNameRouter({channel: Jobs.as_asgi() for channel in channels})
    worker = Worker(router, channels, get_channel_layer(), concurrency=concurrency)
    task = asyncio.ensure_future(worker.arun())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not until():
            assert asyncio.get_running_loop().time() < deadline, "worker too slow"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_worker_handles_messages_sent_to_its_channels():
    Jobs.done = []
    layer = get_channel_layer()
    for payload in ("a", "b"):
        await layer.send("thumbnails", {"type": "job.run", "payload": payload})
    await layer.send("emails", {"type": "job.run", "payload": "c"})
    await run_worker(["thumbnails", "emails"], until=lambda: len(Jobs.done) == 3)
    assert sorted(payload for payload, _ in Jobs.done) == ["a", "b", "c"]


async def test_concurrency_runs_jobs_of_one_channel_in_parallel():
    Jobs.done = []
    Jobs.meeting.reset()
    layer = get_channel_layer()
    for _ in range(2):
        await layer.send("thumbnails", {"type": "job.run", "payload": "meet"})
    await run_worker(["thumbnails"], concurrency=2, until=lambda: len(Jobs.done) == 2)
    assert [payload for payload, _ in Jobs.done] == ["meet", "meet"]
    assert len({thread for _, thread in Jobs.done}) == 2


async def test_a_crashing_job_is_logged_and_the_worker_carries_on(caplog, monkeypatch):
    monkeypatch.setattr("consumers.worker.RESTART_DELAY", 0.01)
    Jobs.done = []
    layer = get_channel_layer()
    await layer.send("thumbnails", {"type": "job.run", "payload": "crash"})
    await layer.send("thumbnails", {"type": "job.run", "payload": "after"})
    await run_worker(["thumbnails"], until=lambda: Jobs.done)
    assert [payload for payload, _ in Jobs.done] == ["after"]
    assert "crashed; restarting" in caplog.text
    assert "RuntimeError: bad job" in caplog.text


def test_worker_refuses_process_local_channel_names():
    with pytest.raises(ValueError, match="plain names"):
        Worker(Jobs.as_asgi(), ["inbox!abc"], get_channel_layer())


async def test_a_worker_consumer_sending_to_its_missing_client_gets_a_clear_error(caplog):
    class Talker(AsyncConsumer):
        async def job_run(self, message):
            await self.send({"type": "reply"})

    await get_channel_layer().send("talk", {"type": "job.run"})
    worker = Worker(Talker.as_asgi(), ["talk"], get_channel_layer())
    task = asyncio.ensure_future(worker.arun())
    try:
        for _ in range(200):
            if "no client connection" in caplog.text:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "reply through the channel layer" in caplog.text


def test_runworker_without_a_layer_exits_with_a_clear_message(settings):
    settings.CHANNEL_LAYERS = {}
    with pytest.raises(CommandError, match="no channel layer 'default' is configured"):
        call_command("runworker", "thumbnails")


def test_runworker_rejects_a_bad_channel_name():
    with pytest.raises(CommandError, match="Channel name"):
        call_command("runworker", "bad name")


def test_runworker_refuses_a_channel_the_router_does_not_know():
    with pytest.raises(CommandError, match=r"No consumer is routed for channel\(s\) thumbnails"):
        call_command("runworker", "log", "thumbnails")


def test_runworker_process_starts_and_stops_cleanly_on_sigterm():
    worker = ManagePy("runworker", "log")
    try:
        worker.wait_for("Worker listening on log")
    finally:
        returncode = worker.stop()
    worker.wait_for("Worker for log stopped", timeout=5)
    assert returncode == 0, worker.output
    assert "Traceback" not in worker.output


def test_runworker_receives_from_another_process_over_redis():
    """A real runworker process on the Redis layer handles a message this process sends."""
    url = f"{REDIS_URL}/13"  # a database of its own on the shared server
    worker = ManagePy("runworker", "log", env={"REDIS_URL": url})
    try:
        worker.wait_for("Worker listening on log")
        layer = RedisChannelLayer(hosts=[url])
        asyncio.run(layer.send("log", {"type": "log.message", "text": "from another process"}))
        worker.wait_for("Worker got: from another process")
    finally:
        worker.stop()
