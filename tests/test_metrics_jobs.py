"""Worker jobs and presence in the metrics, read from the process's registry."""

from __future__ import annotations

import asyncio
import gc
import weakref

from prometheus_client import REGISTRY

from channels_layer.memory import InMemoryChannelLayer
from consumers import metrics
from consumers.consumer import AsyncConsumer
from consumers.presence_tracker import Tracker
from consumers.worker import Worker, _LeasedReceive


def jobs(outcome: str) -> float:
    return REGISTRY.get_sample_value("consumers_worker_jobs_total", {"outcome": outcome}) or 0.0


class Flaky(AsyncConsumer):
    handled: list[str] = []

    async def job_run(self, message):
        type(self).handled.append(message["payload"])
        if message["payload"] == "crash":
            raise RuntimeError("a failing job")


async def test_jobs_done_and_failed_are_counted():
    layer = InMemoryChannelLayer()
    before = {outcome: jobs(outcome) for outcome in ("done", "failed")}
    for payload in ("a", "b", "crash", "c"):
        await layer.send("flaky", {"type": "job.run", "payload": payload})
    task = asyncio.ensure_future(Worker(Flaky.as_asgi(), ["flaky"], layer).arun())
    try:
        async with asyncio.timeout(10):
            while Flaky.handled != ["a", "b", "crash", "c"]:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert jobs("done") - before["done"] == 3
    assert jobs("failed") - before["failed"] == 1


class Slow(AsyncConsumer):
    started = asyncio.Event()

    async def job_run(self, message):
        type(self).started.set()
        await asyncio.sleep(60)


async def test_a_job_cut_short_by_its_worker_stopping_is_neither_done_nor_failed():
    layer = InMemoryChannelLayer()
    before = {outcome: jobs(outcome) for outcome in ("done", "failed")}
    Slow.started = asyncio.Event()
    await layer.send("slow", {"type": "job.run"})
    task = asyncio.ensure_future(Worker(Slow.as_asgi(), ["slow"], layer).arun())
    async with asyncio.timeout(10):
        await Slow.started.wait()
    task.cancel()  # what SIGTERM does to a worker
    await asyncio.gather(task, return_exceptions=True)
    assert {outcome: jobs(outcome) - before[outcome] for outcome in before} == {
        "done": 0,
        "failed": 0,
    }


async def test_jobs_handed_back_are_counted_as_redelivered(make_layer):
    layer = make_layer(at_least_once={"leased": 30})
    before = jobs("redelivered")
    for payload in ("one", "two"):
        await layer.send("leased", {"type": "job.run", "payload": payload})
    receive = _LeasedReceive(layer, "leased")
    await receive()  # holds "one"
    await receive.give_back()  # stopping: back to the channel at once
    await receive()  # holds "one" again
    receive.abandon()  # a crash: back once the lease runs out
    await receive.give_back()  # nothing held any more: nothing counted
    assert jobs("redelivered") - before == 2


def presence(name: str) -> float:
    return REGISTRY.get_sample_value(f"consumers_presence_{name}") or 0.0


async def test_presence_figures_follow_the_trackers():
    layer = InMemoryChannelLayer()
    before = {name: presence(name) for name in ("topics", "local_entries")}
    tracker = Tracker(layer, "metrics-room", interval=0.1)
    try:
        tracker.track("ada", {})
        tracker.track("ada", {})
        tracker.track("bob", {})
        assert presence("topics") - before["topics"] == 1
        assert presence("local_entries") - before["local_entries"] == 3
    finally:
        tracker.task.cancel()
        await asyncio.gather(tracker.task, return_exceptions=True)
    assert presence("topics") == before["topics"]
    assert presence("local_entries") == before["local_entries"]


def test_a_measured_consumer_class_is_not_kept_alive_by_the_metrics():
    """Classes made at run time (tests, DCRF's observers) must go when nothing uses them:
    kept alive, djangochannelsrestframework's model observers stayed subscribed to
    signals and sent stale updates."""

    def consumer_class():
        class Passing(AsyncConsumer):
            async def thing_done(self, message):
                pass

        return Passing

    cls = consumer_class()
    consumer = cls()
    consumer.scope = {"type": "websocket"}
    with metrics.handling(consumer):
        pass
    gone = weakref.ref(cls)
    del cls, consumer
    gc.collect()
    assert gone() is None
