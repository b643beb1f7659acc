"""The Redis layer fixtures (``make_layer``, ``redis_servers``, ``redis_cluster``) live in
tests/conftest.py.

A module that sets ``ON_CLUSTER = True`` runs each of its tests that use ``make_layer``
twice: on the single Redis, and on a Redis Cluster of 3 masters and 3 replicas started once
for the session (``layer_backend`` says which). Tests about one server's specifics (they
start servers of their own, or look at its keys or clients) are marked ``single_server``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
import redis

from channels_layer.redis import RedisChannelLayer
from tests.redis_servers import REDIS_URL

BACKENDS = ["single", "cluster"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "single_server: about one Redis server only; not run on the Cluster"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        getattr(metafunc.module, "ON_CLUSTER", False)
        and "make_layer" in metafunc.fixturenames
        and "redis_servers" not in inspect.signature(metafunc.function).parameters
        and metafunc.definition.get_closest_marker("single_server") is None
    ):
        metafunc.parametrize("layer_backend", BACKENDS, indirect=True)


@pytest.fixture
def layer_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "single")


@pytest.fixture
def make_layer(make_layer, layer_backend, request):
    """tests/conftest.py's ``make_layer``, on the Cluster when ``layer_backend`` says so."""
    if layer_backend == "single":
        return make_layer
    cluster = request.getfixturevalue("redis_cluster")

    def make(layer_class=RedisChannelLayer, **config):
        config.setdefault("hosts", [cluster.url])
        config.setdefault("cluster", True)
        return make_layer(layer_class, **config)

    return make


@pytest.fixture
def raw_redis(layer_backend, request) -> Iterator[redis.Redis | redis.RedisCluster]:
    """A plain client of the Redis (or Cluster) the layers of this test use."""
    if layer_backend == "single":
        client: redis.Redis | redis.RedisCluster = redis.Redis.from_url(REDIS_URL)
    else:
        client = redis.RedisCluster.from_url(request.getfixturevalue("redis_cluster").url)
    yield client
    client.close()
