"""At-least-once named channels on the Redis layer: leases, renewal, redelivery; on a single
Redis and on a Redis Cluster (see conftest)."""

import asyncio

import pytest

from channels_layer.memory import InMemoryChannelLayer

TIMEOUT = 0.6
ON_CLUSTER = True


@pytest.fixture
def jobs(make_layer):
    """Two layers (two worker processes) with ``jobs*`` channels at least once."""
    return [make_layer(at_least_once={"jobs*": TIMEOUT}) for _ in range(2)]


async def nothing_within(layer, channel, seconds):
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await layer.receive_leased(channel)
    return True


async def test_only_configured_named_channels_are_leased(make_layer):
    layer = make_layer(at_least_once={"jobs*": 30, "other": 5})
    assert layer.lease_timeout("jobs.thumbnails") == 30
    assert layer.lease_timeout("other") == 5
    assert layer.lease_timeout("log") is None
    assert layer.lease_timeout("jobs.x!abc") is None  # process-local: never
    assert InMemoryChannelLayer().lease_timeout("jobs") is None
    with pytest.raises(ValueError, match="not configured as at_least_once"):
        await layer.receive_leased("log")
    with pytest.raises(TypeError, match=r"at_least_once\['jobs'\] must be a positive number"):
        make_layer(at_least_once={"jobs": 0})


async def test_a_finished_job_is_gone(jobs):
    one, two = jobs
    await one.send("jobs", {"type": "job", "n": 1})
    message, lease = await two.receive_leased("jobs")
    assert message == {"type": "job", "n": 1}
    await lease.finish()
    assert await nothing_within(one, "jobs", 3 * TIMEOUT)


async def test_a_job_whose_worker_died_goes_to_another_after_the_timeout(jobs):
    one, two = jobs
    await one.send("jobs", {"type": "job", "n": 1})
    _, lease = await one.receive_leased("jobs")
    lease.abandon()  # as if the process had died: no more renewals
    waited = asyncio.get_running_loop().time()
    message, again = await asyncio.wait_for(two.receive_leased("jobs"), 5)
    waited = asyncio.get_running_loop().time() - waited
    assert message == {"type": "job", "n": 1}
    assert TIMEOUT * 0.8 < waited < TIMEOUT + 2  # after the lease ran out, not before
    await again.finish()


async def test_a_held_job_is_renewed_and_never_runs_twice_at_once(jobs):
    one, two = jobs
    await one.send("jobs", {"type": "job", "n": 1})
    _, lease = await one.receive_leased("jobs")
    # Held for five timeouts: renewals keep it from the other worker all along.
    assert await nothing_within(two, "jobs", 5 * TIMEOUT)
    await lease.finish()
    assert await nothing_within(two, "jobs", 2 * TIMEOUT)


async def test_a_given_back_job_is_next_in_line_at_once(jobs):
    one, two = jobs
    for n in (1, 2):
        await one.send("jobs", {"type": "job", "n": n})
    _, lease = await one.receive_leased("jobs")
    await lease.give_back()
    first, lease = await asyncio.wait_for(two.receive_leased("jobs"), TIMEOUT / 2)
    assert first["n"] == 1
    await lease.finish()


async def test_equal_messages_are_separate_jobs(jobs):
    one, two = jobs
    for _ in range(3):
        await one.send("jobs", {"type": "job"})
    leases = [(await one.receive_leased("jobs"))[1] for _ in range(3)]
    for lease in leases:
        await lease.finish()
    assert await nothing_within(two, "jobs", 2 * TIMEOUT)


async def test_at_least_once_messages_outlive_expiry(make_layer):
    one = make_layer(at_least_once={"jobs": TIMEOUT}, expiry=1)
    await one.send("jobs", {"type": "job"})
    await one.send("plain", {"type": "job"})
    await asyncio.sleep(1.2)
    message, lease = await asyncio.wait_for(one.receive_leased("jobs"), 2)
    assert message == {"type": "job"}
    await lease.finish()
    with pytest.raises(TimeoutError):  # the at-most-once channel's message expired
        await asyncio.wait_for(one.receive("plain"), 1.5)
