"""channels_redis's own test suite, run against channels_layer.

The tests ship in channels_redis's sdist: it is fetched at test time with ``pip download``
(never copied into this repository) and run in a subprocess, with ``channels_redis.core``,
``.pubsub``, ``.serializers`` and ``.utils`` made to import ours, against a Redis server of
the test's own (their tests flush the ``asgi`` prefix of databases 0-9 of whatever Redis
they find). Each difference we keep on purpose is an expected failure, with its reason;
an expected failure that passes fails the run, so the list stays true.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from testsupport.processes import ROOT

VERSION = "4.3.0"

# channels_redis modules, as our code: their tests import nothing else of theirs.
SHIM = {
    "channels_redis/__init__.py": "",
    "channels_redis/core.py": """
        import os
        from channels_layer.exceptions import ChannelFull
        from channels_layer.redis import RedisChannelLayer as _Ours

        _REDIS = os.environ["CHANNELS_REDIS_SUITE_REDIS"]

        def on_test_server(hosts):
            # Their tests name redis://localhost:6379[/db] or rely on the default host.
            if not hosts:
                return [_REDIS]
            return [
                host.replace("redis://localhost:6379", _REDIS) if isinstance(host, str) else host
                for host in hosts
            ]

        class RedisChannelLayer(_Ours):
            def __init__(self, hosts=None, *args, **kwargs):
                super().__init__(on_test_server(hosts), *args, **kwargs)
    """,
    "channels_redis/pubsub.py": """
        from channels_layer.pubsub import RedisPubSubChannelLayer as _Ours
        from channels_redis.core import on_test_server

        class RedisPubSubChannelLayer(_Ours):
            def __init__(self, hosts=None, *args, **kwargs):
                super().__init__(on_test_server(hosts), *args, **kwargs)
    """,
    "channels_redis/serializers.py": "from channels_layer.serializers import *  # noqa\n"
    "from channels_layer.serializers import SerializerDoesNotExist  # noqa\n",
    "channels_redis/utils.py": """
        from channels_layer.redis_hosts import ShardRing

        def _consistent_hash(value, ring_size):
            if isinstance(value, bytes):
                value = value.decode()
            return ShardRing(ring_size).shard(value)

        async def _close_redis(connection):
            await connection.aclose()
    """,
}

# Their consistent-hash cases whose value differs on our ring.
OTHER_HASHES = (
    "key_two-2-0",
    "key_one-10-6_0",
    "key_two-10-4_0",
    "key_one-10-6_1",
    "key_two-10-4_1",
)
PRIVATE = "tests a private part of channels_redis's implementation that ours does not have"
EXPECTED_FAILURES = {
    # Deliberate differences (the README's table of differences).
    "test_core.py::test_reject_bad_client_prefix": (
        "receive() on another process's channel raises ValueError naming the cause, not a "
        "bare AssertionError (which python -O would skip)"
    ),
    "test_core.py::test_group_send_capacity": (
        "a full member skipped by group_send is counted and logged as one WARNING at most "
        "every 10 s, not one INFO line per group_send"
    ),
    "test_core.py::test_group_send_capacity_multiple_channels": (
        "a full member skipped by group_send is counted and logged as one WARNING at most "
        "every 10 s, not one INFO line per group_send"
    ),
    "test_pubsub.py::test_receive_on_non_owned_general_channel": (
        "messages must be dicts with a 'type' (the channel layer spec); it sends a str"
    ),
    "test_pubsub.py::test_serialize": (
        "serialize() checks the message first: it must be a dict with a 'type'"
    ),
    # Internals of channels_redis's implementation.
    "test_core.py::test_default_group_key_format": PRIVATE + " (_group_key)",
    "test_core.py::test_custom_group_key_format": PRIVATE + " (_group_key)",
    "test_core.py::test_receive_buffer_respects_capacity": PRIVATE + " (receive_buffer)",
    "test_pubsub.py::test_loop_instance_channel_layer_reference": PRIVATE + " (_get_layer)",
    "test_pubsub.py::test_multi_event_loop_garbage_collection": PRIVATE + " (_layers)",
    "test_pubsub.py::test_auto_reconnect": PRIVATE + " (_shards)",
    **{
        f"test_utils.py::test_consistent_hash_result[{case}]": (
            "our ring is a different consistent hash (160 points per host, so adding a "
            "host moves about 1/N of the keys)"
        )
        for case in OTHER_HASHES
    },
}

# Applies EXPECTED_FAILURES (strict: one that passes is an error); channels_redis's own
# xfail markers stay as they are.
CONFTEST = """
import json, os
import pytest

EXPECTED = json.loads(os.environ["CHANNELS_REDIS_SUITE_XFAIL"])

def pytest_collection_modifyitems(items):
    for item in items:
        reason = EXPECTED.get(item.nodeid.split("tests/")[-1])
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
"""

# Run through a Redis Sentinel at localhost:26379 with a password: the same tests as
# test_core.py/test_pubsub.py; our Sentinel support has its own tests.
NOT_RUN = ["test_sentinel.py", "test_pubsub_sentinel.py"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """channels_redis's tests and the import shim, in a temporary directory."""
    where = tmp_path_factory.mktemp("channels_redis_suite")
    download = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "-q", "--no-deps"),
            *("--no-binary", ":all:", "-d", str(where), f"channels_redis=={VERSION}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    sdists = list(where.glob("channels_redis-*.tar.gz"))
    if download.returncode != 0 or not sdists:
        pytest.skip(f"channels_redis {VERSION} sdist not downloadable: {download.stderr[-500:]}")
    with tarfile.open(sdists[0]) as sdist:
        members = [m for m in sdist.getmembers() if "/tests/" in m.name and m.isfile()]
        sdist.extractall(where, members=members, filter="data")
    tests = where / f"channels_redis-{VERSION}" / "tests"
    (tests / "conftest.py").write_text(CONFTEST)
    # Their settings (setup.cfg's), and a root of their own so ours do not apply.
    (tests.parent / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "timeout = 20\naddopts = -p no:django -p no:cacheprovider -p no:randomly\n"
    )
    shim = where / "shim"
    for path, source in SHIM.items():
        (shim / path).parent.mkdir(parents=True, exist_ok=True)
        (shim / path).write_text(textwrap.dedent(source))
    return tests, shim


@pytest.mark.timeout(180)
def test_channels_redis_suite_passes_but_for_the_listed_differences(suite, redis_servers):
    tests, shim = suite
    [server] = redis_servers()
    report = tests.parent / "report.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests), "-q"]
        + [f"--ignore={tests / name}" for name in NOT_RUN]
        + ["-W", "ignore::DeprecationWarning", f"--junitxml={report}", "-rfE"],
        cwd=tests.parent,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": f"{shim}:{ROOT}",
            "CHANNELS_REDIS_SUITE_REDIS": server.url,
            "CHANNELS_REDIS_SUITE_XFAIL": json.dumps(EXPECTED_FAILURES),
        },
        capture_output=True,
        text=True,
        timeout=150,
    )
    outcome = _outcomes(report)
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert outcome["failed"] == [], tail
    assert outcome["error"] == [], tail
    ours = {name for name in outcome["xfailed"] if name in EXPECTED_FAILURES}
    assert ours == set(EXPECTED_FAILURES), tail
    theirs = set(outcome["xfailed"]) - ours  # channels_redis marks two of its own as xfail
    assert theirs <= {"test_core.py::test_receive_cancel", _THEIR_EXPIRY_XFAIL}, tail
    assert len(outcome["passed"]) >= 58, tail  # 59 on 4.3.0, one of them their xfail
    print(
        f"channels_redis {VERSION} suite on channels_layer: {len(outcome['passed'])} passed, "
        f"{len(ours)} expected failures (ours), {len(theirs)} xfail (theirs), "
        f"{len(NOT_RUN)} Sentinel files not run"
    )


_THEIR_EXPIRY_XFAIL = "test_core.py::test_message_expiry__group_send__one_channel_expires_message"


def _outcomes(report: Path) -> dict[str, list[str]]:
    """Test ids (``file::name[params]``) by outcome, from the JUnit report."""
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "error": [], "xfailed": []}
    if not report.exists():
        outcome["error"].append("no report: the run did not start")
        return outcome
    # The report our own pytest run just wrote.
    for case in ElementTree.parse(report).getroot().iter("testcase"):  # noqa: S314
        module = case.get("classname", "").rpartition(".")[2]
        name = f"{module}.py::{case.get('name')}"
        skipped = case.find("skipped")
        if case.find("failure") is not None:
            outcome["failed"].append(name)
        elif case.find("error") is not None:
            outcome["error"].append(name)
        elif skipped is not None and skipped.get("type") == "pytest.xfail":
            outcome["xfailed"].append(name)
        elif skipped is None:
            outcome["passed"].append(name)
    return outcome
