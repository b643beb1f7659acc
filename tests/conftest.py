"""Suite-wide fixtures."""

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from channels_layer import channel_layers
from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import REDIS_URL, RedisClusterServers, RedisServer


@pytest.fixture(autouse=True)
def fresh_channel_layers():
    """Each test starts with new layer instances, so no group or message leaks between tests."""
    channel_layers.reset()
    yield
    channel_layers.reset()


@pytest.fixture
async def make_layer(redis_servers):
    """Build layers that share one unique prefix (as processes of one site do) on the
    machine's Redis unless told otherwise; their keys are deleted afterwards, before the
    test's own ``redis_servers`` stop (so no flush waits for a server that is gone)."""
    prefix = f"test-{secrets.token_hex(6)}"
    layers = []

    def make(layer_class=RedisChannelLayer, **config):
        config.setdefault("hosts", [REDIS_URL])
        config.setdefault("prefix", prefix)
        layer = layer_class(**config)
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        # A test may have stopped the server this layer used.
        with contextlib.suppress(redis.RedisError, OSError):
            await asyncio.wait_for(layer.flush(), 2)
        await layer.close()


@pytest.fixture
def redis_servers():
    """Start extra redis-server processes: ``redis_servers(3)``; all are killed afterwards."""
    started = []

    def start(count=1, *extra_args):
        servers = [RedisServer(extra_args=extra_args).start() for _ in range(count)]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """One Redis Cluster (3 masters, 3 replicas) for the session, started when a test first
    asks for it: each test has its own key prefix on it (``make_layer``'s)."""
    cluster = RedisClusterServers().start()
    yield cluster
    cluster.stop()


# What each fuzz test sent (node id: counts), for the summary at the end of the run.
SENT: dict[str, Counter[str]] = {}


@pytest.fixture
def tally(request, caplog):
    """What a fuzz test sends, counted over all its Hypothesis examples (a fixture lives for
    the whole test). The test states the least it must send, ``@pytest.mark.sends(frames=N)``
    (any counter: ``operations=N``...); afterwards that is asserted, and that nothing was
    logged at ERROR or above."""
    marker = request.node.get_closest_marker("sends")
    assert marker is not None and marker.kwargs, "a fuzz test says what it sends at least"
    counts: Counter[str] = Counter()
    yield counts
    SENT[request.node.nodeid] = counts
    errors = [record for record in caplog.get_records("call") if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]
    for counter, least in marker.kwargs.items():
        assert counts[counter] >= least, (counter, least, dict(counts))


# Figures the drills measure (recovery times, losses, memory) are printed by their tests;
# pytest hides a passing test's output, so they are gathered into one section at the end.
_figures: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and report.capstdout.strip():
        _figures.append((report.nodeid, report.capstdout.strip()))


def pytest_terminal_summary(terminalreporter):
    if SENT:
        terminalreporter.section("fuzzing")
        for nodeid, counts in SENT.items():
            terminalreporter.write_line(f"{nodeid}: {dict(counts)}")
        if frames := sum(counts["frames"] for counts in SENT.values()):
            terminalreporter.write_line(f"frames sent to consumers in all: {frames}")
    if _figures:
        terminalreporter.section("figures measured")
        for nodeid, output in _figures:
            terminalreporter.write_line(f"{nodeid}:")
            for line in output.splitlines():
                terminalreporter.write_line(f"    {line}")
