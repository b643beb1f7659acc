"""The benchmark harness (``python -m bench.run``) end to end in its tiny mode.

Only "ours" and "bare" run, so neither the Channels venv nor the network is needed; the
figures are not asserted, only that a table and the raw JSON come out and that every
process the harness started is gone. Redis database 11 and a per-run key prefix keep it
apart from other tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.harness import procs
from testsupport.processes import Process


def run_harness(*args: str, timeout: float = 40) -> tuple[int | None, str]:
    """``python -m bench.run ARGS``; past ``timeout`` it gets SIGTERM (it stops its children)."""
    env = {"BENCH_REDIS_URL": "redis://127.0.0.1:6379/11"}
    harness = Process(sys.executable, "-m", "bench.run", *args, env=env, settings=None)
    return harness.finish(timeout, grace=15), harness.output


def test_tiny_run_writes_table_and_json_and_stops_its_processes(tmp_path: Path) -> None:
    code, output = run_harness(
        "--tiny",
        "--impls",
        "ours,bare",
        "--scenarios",
        "layer,echo,memory",
        "--output",
        str(tmp_path),
    )
    assert code == 0, output

    table = (tmp_path / "latest.md").read_text()
    assert "| metric | unit | ours | Channels | bare |" in table
    assert "async consumer: round trips" in table
    assert "point-to-point at saturation: received" in table
    assert "not yet" in table  # the scenarios it did not run are marked

    data = json.loads((tmp_path / "latest.json").read_text())
    assert data["errors"] == [], data["errors"]
    assert {(run["scenario"], run["impl"]) for run in data["runs"]} == {
        (scenario, impl) for scenario in ("layer", "echo", "memory") for impl in ("ours", "bare")
    }
    assert all(run["metrics"] for run in data["runs"])
    assert data["medians"]["ours"]["async.rps"] > 0

    started = data["meta"]["started_pids"]
    assert started
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]


def test_runs_unpinned_without_taskset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_NO_TASKSET", "1")
    assert procs.taskset() is None and not procs.pinning_available()
    processes = procs.Processes(tmp_path)
    proc = processes.start(
        "probe", [sys.executable, "-c", "import os; print(os.sched_getaffinity(0))"], core=1
    )
    assert proc.finish(10) == 0
    processes.stop_all()
    assert proc.log_path is not None and "{" in proc.log_path.read_text()
