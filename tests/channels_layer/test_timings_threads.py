"""``Timings`` across threads: the thread that observes first does so without the lock, every
other under it, and a scrape adds both up: no observation is lost, whichever thread made
it, and a thread that ended keeps its observations."""

import sys
import threading

import pytest

from channels_layer.timings import LATENCY_BUCKETS, Timings, TimingsFamily, families


@pytest.fixture
def switching_often():
    """Threads switched as often as the interpreter allows: a lost update shows."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def _observing(timings: Timings, seconds: list[float], times: int) -> threading.Thread:
    def observe() -> None:
        for _ in range(times):
            for each in seconds:
                timings.observe(each)

    return threading.Thread(target=observe)


def test_observations_from_threads_at_once_are_summed_exactly(switching_often):
    timings = Timings()
    seconds = [0.00005, 0.0003, 0.003, 20.0]  # the first bucket, two others, over all
    threads = [_observing(timings, seconds, 5_000) for _ in range(6)]
    for thread in threads:
        thread.start()
    reads = 0
    while any(thread.is_alive() for thread in threads):  # scrapes while they observe
        counts, _ = timings.read()
        assert sum(counts) <= 6 * 5_000 * len(seconds)
        reads += 1
    for thread in threads:
        thread.join()
    counts, total = timings.read()
    assert reads > 0
    assert counts[0] == counts[2] == counts[5] == counts[len(LATENCY_BUCKETS)] == 30_000
    assert sum(counts) == 120_000
    assert total == pytest.approx(30_000 * sum(seconds))


def test_a_thread_that_ended_keeps_its_observations_in_the_scrape():
    family = TimingsFamily("test_timings_threads_seconds", "a test")
    try:
        timings = family.labels()
        owner = _observing(timings, [0.00005, 0.002], 1_000)  # observes first: owns it
        owner.start()
        owner.join()
        other = _observing(timings, [0.0002], 500)
        other.start()
        other.join()
        timings.observe(0.5)
        samples = {(s.name, s.labels.get("le")): s.value for s in family.metric().samples}
    finally:
        families.remove(family)
    name = "test_timings_threads_seconds"
    assert samples[f"{name}_bucket", "0.0001"] == 1_000
    assert samples[f"{name}_bucket", "0.00025"] == 1_500
    assert samples[f"{name}_bucket", "0.0025"] == 2_500
    assert samples[f"{name}_bucket", "+Inf"] == samples[f"{name}_count", None] == 2_501
    assert samples[f"{name}_sum", None] == pytest.approx(1_000 * 0.00205 + 500 * 0.0002 + 0.5)


def test_the_thread_that_observed_first_never_waits_on_the_lock():
    # Its observations (an event loop's, on every frame) take no lock: a scrape, or another
    # thread observing, holding it does not hold them up.
    timings = Timings()
    go_on, done = threading.Event(), threading.Event()

    def owner() -> None:
        timings.observe(0.00005)
        go_on.wait()
        timings.observe(0.00005)
        done.set()

    thread = threading.Thread(target=owner)
    thread.start()
    with timings._lock:  # as a scrape, or another thread's observation, holds it
        go_on.set()
        observed_while_held = done.wait(2)
    thread.join()
    assert observed_while_held
    assert timings.read()[0][0] == 2


def test_other_threads_observe_under_the_lock():
    # Two threads writing one tally without a lock could lose a count (an increment is a
    # read and a write): every thread but the first observes under the lock. (The GIL
    # switches threads too seldom for the summing test above to show a lost count.)
    timings = Timings()
    timings.observe(0.00005)  # this thread owns the tally
    done = threading.Event()
    other = threading.Thread(target=lambda: (timings.observe(0.00005), done.set()))
    with timings._lock:
        other.start()
        observed_while_held = done.wait(0.2)
    other.join()
    assert not observed_while_held
    assert timings.read()[0][0] == 2
