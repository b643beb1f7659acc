"""The recovery scenario through the benchmark harness, in its tiny mode (20 clients over
two Daphnes and Redis database 11, each missing 5 messages): it runs, loses nothing,
duplicates nothing, and stops every process it started."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from testsupport.processes import Process


def test_tiny_recovery_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    env = {"BENCH_REDIS_URL": "redis://127.0.0.1:6379/11"}
    args = ("--tiny", "--impls", "ours", "--scenarios", "recovery", "--output", str(tmp_path))
    harness = Process(sys.executable, "-m", "bench.run", *args, env=env, settings=None)
    assert harness.finish(90, grace=15) == 0, harness.output

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["errors"] == [], data["errors"]
    [run] = data["runs"]
    metrics = run["metrics"]
    assert metrics["recovery.clients"] == 20 and metrics["recovery.missed_each"] == 5
    assert metrics["recovery.lost"] == 0
    assert metrics["recovery.duplicates"] == 0
    assert metrics["recovery.failed"] == 0
    assert metrics["recovery.redis_calls.xrange"] >= 1  # the history was read from Redis
    assert not [pid for pid in data["meta"]["started_pids"] if Path(f"/proc/{pid}").exists()]
