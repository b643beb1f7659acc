"""A worker killed in the middle of a job: with the channel at least once, another worker
runs the job after the visibility timeout, never while the first still could."""

import asyncio
import secrets
import time

import pytest

from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import REDIS_URL
from testsupport.processes import ManagePy

LEASE = 2.0


@pytest.fixture
async def drill():
    """A prefix of its own, a layer on it, and ``start(lease)`` for runworker processes;
    every worker is stopped and every key deleted afterwards."""
    prefix = f"jobs-{secrets.token_hex(4)}"
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix, at_least_once={"jobs": LEASE})
    workers: list[ManagePy] = []

    def start(lease: float = LEASE) -> ManagePy:
        worker = ManagePy(
            "runworker",
            "jobs",
            env={
                "DJANGO_SETTINGS_MODULE": "tests.reliability.worker_settings",
                "REDIS_URL": REDIS_URL,
                "REDIS_PREFIX": prefix,
                "JOB_LEASE": str(lease),
            },
        )
        workers.append(worker)
        return worker.ready("Worker listening on")

    yield layer, start
    for worker in workers:
        worker.stop()
    await layer.flush()
    await layer.close()


async def next_report(layer, timeout=10):
    return await asyncio.wait_for(layer.receive("results"), timeout)


async def test_a_killed_workers_job_runs_once_more_elsewhere_after_the_lease(drill):
    layer, start = drill
    first = start()
    await layer.send("jobs", {"type": "job.run", "n": 1, "seconds": 30})
    await layer.send("jobs", {"type": "job.run", "n": 2, "seconds": 0})
    started = await next_report(layer)
    assert (started["event"], started["n"], started["pid"]) == ("start", 1, first.process.pid)
    first.process.kill()
    first.process.wait(5)
    killed = time.monotonic()
    second = start()
    reports = [await next_report(layer, 3 * LEASE + 5) for _ in range(3)]
    redelivered_after = time.monotonic() - killed
    print(f"a killed worker's job ran again after {redelivered_after:.1f} s (lease {LEASE} s)")
    assert {(r["event"], r["n"]) for r in reports} == {("start", 2), ("end", 2), ("start", 1)}
    assert all(r["pid"] == second.process.pid for r in reports)
    assert redelivered_after >= LEASE - 0.5  # not before the lease ran out
    assert "Traceback" not in second.output, second.output


async def test_a_stopped_worker_gives_its_job_back_at_once(drill):
    layer, start = drill
    first = start(lease=30)
    await layer.send("jobs", {"type": "job.run", "n": 1, "seconds": 60})
    assert (await next_report(layer))["pid"] == first.process.pid
    assert first.stop() == 0  # SIGTERM: a graceful stop
    second = start(lease=30)
    again = await next_report(layer, 10)  # well before the 30 s lease would run out
    assert (again["event"], again["n"], again["pid"]) == ("start", 1, second.process.pid)
