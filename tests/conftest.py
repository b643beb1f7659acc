"""Suite-wide fixtures."""

import asyncio
import contextlib
import secrets

import pytest
import redis

from channels_layer import channel_layers
from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import REDIS_URL, RedisServer


@pytest.fixture(autouse=True)
def fresh_channel_layers():
    """Each test starts with new layer instances, so no group or message leaks between tests."""
    channel_layers.reset()
    yield
    channel_layers.reset()


@pytest.fixture
async def make_layer():
    """Build layers that share one unique prefix (as processes of one site do) on the
    machine's Redis unless told otherwise; their keys are deleted afterwards."""
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


# Figures the drills measure (recovery times, losses, memory) are printed by their tests;
# pytest hides a passing test's output, so they are gathered into one section at the end.
_figures: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and report.capstdout.strip():
        _figures.append((report.nodeid, report.capstdout.strip()))


def pytest_terminal_summary(terminalreporter):
    if _figures:
        terminalreporter.section("figures measured")
        for nodeid, output in _figures:
            terminalreporter.write_line(f"{nodeid}:")
            for line in output.splitlines():
                terminalreporter.write_line(f"    {line}")
