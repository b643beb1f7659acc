"""``python -m bench.cluster --tiny`` end to end: a single Redis, a 1-master and a 3-master
Cluster of its own (on free ports), ours on each. The figures are not asserted, only that
every row has a figure for every topology, that nothing was lost, and that every process
it started (redis-servers included) is gone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.cluster import TINY, TOPOLOGIES, _rows
from testsupport.processes import Process


def test_tiny_run_has_every_row_and_loses_nothing(tmp_path: Path) -> None:
    bench = Process(
        sys.executable, "-m", "bench.cluster", "--tiny", "--output", str(tmp_path), settings=None
    )
    code = bench.finish(90, grace=15)
    assert code == 0, bench.output

    data = json.loads((tmp_path / "cluster.json").read_text())
    assert data["errors"] == []
    assert [run["topology"] for run in data["runs"]] == list(TOPOLOGIES)
    for name in TOPOLOGIES:
        figures = data["medians"][name]
        # Rates and latencies are not asserted: under load a 0.4 s window can end before
        # the first arrival. Losses are counted after every message had time to arrive.
        lost = {key: value for key, value in figures.items() if key.endswith(".lost")}
        assert {"p2p_rate.lost", "spread.lost", "group20.lost", "redis20.lost"} <= set(lost)
        assert not any(lost.values()), (name, lost)

    table = (tmp_path / "cluster.md").read_text()
    assert "| single Redis | Cluster, 1 master | Cluster, 3 masters |" in table
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[3:6]]
        for line in table.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    labels = [label for label, _keys, _unit in _rows(TINY)]
    assert list(rows) == ["figure", *labels]
    for label in labels:
        if label.endswith(": lost"):
            assert rows[label] == ["0", "0", "0"], label

    # Every process it started is gone, the redis-servers (started in-process) included.
    assert not [pid for pid in data["meta"]["started_pids"] if Path(f"/proc/{pid}").exists()]
    assert not [pid for pid in data["meta"]["redis_pids"] if Path(f"/proc/{pid}").exists()]
