"""The soak (``python -m bench.soak``): many chat clients on two Daphnes over Redis for minutes.

``test_soak_two_minutes`` is the real one (500 clients, 2 minutes; ``pytest -m slow``): no
message lost and resident memory growing under 5 % per process after the warm-up. The fast
test runs the same script at a tiny size so that it cannot rot: set-up, clients, the loss
accounting, the report files and the clean-up (processes, database, Redis keys).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import soak
from testsupport.databases import POSTGRES_URL, database_exists
from testsupport.processes import Process

REDIS = os.environ.get("BENCH_REDIS_URL", soak.DEFAULT_REDIS)


def services_missing() -> str | None:
    try:
        import psycopg

        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception as error:
        return f"PostgreSQL at {POSTGRES_URL} unreachable: {error}"
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_timeout=3).ping()
    except Exception as error:
        return f"Redis at {REDIS} unreachable: {error}"
    return None


@pytest.fixture(scope="module")
def services() -> None:
    missing = services_missing()
    if missing:
        pytest.skip(missing)


def run_soak(*args: str, timeout: float) -> tuple[int, str]:
    """Run the soak as a user would; on timeout SIGTERM it (it cleans up) first."""
    argv = ["--postgres-url", POSTGRES_URL, "--redis-url", REDIS, *args]
    process = Process(sys.executable, "-m", "bench.soak", *argv, settings=None)
    code = process.finish(timeout)
    print(process.output)
    if code is None:
        pytest.fail(f"the soak took over {timeout} s:\n{process.output}")
    return code, process.output


def assert_cleaned_up(report: dict[str, Any]) -> None:
    for pid in report["started_pids"]:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"process {pid} still runs"
    assert not database_exists(POSTGRES_URL, report["database"]), "database not dropped"
    assert soak.count_keys(REDIS, report["run_id"]) == 0, "Redis keys left behind"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.timeout(60)
def test_tiny_soak_runs_counts_and_cleans_up(services: None, tmp_path: Path) -> None:
    result = tmp_path / "soak.json"
    code, output = run_soak(
        *("--minutes", "0.06", "--clients", "20", "--rate", "20", "--rooms", "3"),
        *("--users", "5", "--drain", "10", "--json", str(result)),
        timeout=50,
    )
    assert code in (0, 1), output  # 1: a target missed; RSS is not judged at this size
    report = json.loads(result.read_text())
    assert result.with_suffix(".md").read_text().startswith("# Soak"), output
    assert "overall:" in output

    assert report["connections"]["connected"] == 20, output
    assert report["connections"]["unexpected_closes"] == 0, output
    messages = report["messages"]
    assert messages["posted"] >= 60, output  # 20/s for 3.6 s
    # Each post reaches every member of its room: 20 clients in 3 rooms, one of them the poster.
    assert messages["expected"] > messages["posted"] * 6, output
    assert (messages["missing"], messages["duplicates"], messages["misrouted"]) == (0, 0, 0)
    assert report["moderated"]["missing"] == 0, output
    for name in ("daphne-1", "daphne-2", "worker"):
        rss = report["rss"][name]
        assert rss["start_kib"] and rss["warmup_kib"] and rss["end_kib"], report["rss"]
        assert "growth_pct" in rss
    assert_cleaned_up(report)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_two_minutes(services: None) -> None:
    code, output = run_soak("--minutes", "2", "--json", str(soak.DEFAULT_JSON), timeout=560)
    report = json.loads(soak.DEFAULT_JSON.read_text())
    assert_cleaned_up(report)
    assert report["connections"]["connected"] == 500, output
    assert report["messages"]["missing"] == 0, output
    for name in ("daphne-1", "daphne-2", "worker"):
        assert report["rss"][name]["growth_pct"] < soak.RSS_GROWTH_TARGET, output
    assert code == 0, output
