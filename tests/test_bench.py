"""The benchmark harness (``python -m bench.run``) end to end in its tiny mode, and the
load generator's Socket.IO framing against a small in-process server.

The harness runs "ours" and "bare" on two servers, so neither a peer's venv nor the network
is needed; the figures are not asserted, only that the tables and the raw JSON come out
and that every process the harness started is gone. A peer (Channels, python-socketio)
runs only when its venv under bench/ is already built with the wanted versions: building
one needs the package index and minutes, so the test says so and skips otherwise. Redis
database 11 and a per-run key prefix keep it apart from other tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bench import loadgen
from bench.harness import envs, procs, report
from bench.run import parse_args
from testsupport.processes import Process


def run_harness(*args: str, timeout: float = 40) -> tuple[int | None, str]:
    """``python -m bench.run ARGS``; past ``timeout`` it gets SIGTERM (it stops its children)."""
    env = {"BENCH_REDIS_URL": "redis://127.0.0.1:6379/11"}
    harness = Process(sys.executable, "-m", "bench.run", *args, env=env, settings=None)
    return harness.finish(timeout, grace=15), harness.output


def tiny_run(
    output: Path, impls: str, scenarios: str, timeout: float = 40, server: str = "uvicorn"
) -> dict:
    """A ``--tiny`` run that must exit 0 and record no error; its raw JSON."""
    code, log = run_harness(
        *("--tiny", "--impls", impls, "--server", server, "--scenarios", scenarios),
        *("--output", str(output)),
        timeout=timeout,
    )
    assert code == 0, log
    data = json.loads((output / "latest.json").read_text())
    assert data["errors"] == [], data["errors"]
    return data


@pytest.mark.timeout(150)  # the harness's own limit is 90 s (it stops its children then)
def test_tiny_run_on_two_servers_writes_tables_and_json_and_stops_its_processes(
    tmp_path: Path,
) -> None:
    data = tiny_run(tmp_path, "ours,bare", "layer,echo,memory", 90, server="daphne,uvicorn")
    table = (tmp_path / "latest.md").read_text()
    assert "| metric | unit | ours | Channels | Socket.IO | bare |" in table
    assert "## Ratios per server, measured in the same run" in table
    assert "| daphne | uvicorn |" in table
    assert "| async echo round trips, ours/bare |" in table
    assert "## On daphne" in table and "## On uvicorn" in table
    assert table.count("| async consumer: round trips |") == 2  # one table per server
    assert table.count("| point-to-point at saturation: received |") == 1  # the layer: no server
    assert "| 50 clients, pipelined 16 deep |" in table  # redis-benchmark beside the layer
    assert "not yet" in table  # the scenarios it did not run are marked

    expected = {("layer", impl, None) for impl in ("ours", "bare", "redis")}
    expected |= {
        (scenario, impl, server)
        for scenario in ("echo", "memory")
        for impl in ("ours", "bare")
        for server in ("daphne", "uvicorn")
    }
    assert {(run["scenario"], run["impl"], run["server"]) for run in data["runs"]} == expected
    assert all(run["metrics"] for run in data["runs"])
    for server in ("daphne", "uvicorn"):
        assert data["medians"][server]["ours"]["async.rps"] > 0
    redis_figures = data["medians"]["(no server)"]["redis"]
    assert redis_figures["redis.c50.rps"] > 0 and redis_figures["redis.p16.rps"] > 0

    started = data["meta"]["started_pids"]
    assert started
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One tiny run of ours beside every peer whose venv is built (ours is measured once
    for all of them); the medians per peer. The run must succeed: a failure fails every
    peer's test."""
    ready = [peer for peer in sorted(envs.PEERS) if envs.ready(envs.PEERS[peer])]
    if not ready:
        return {}
    output = tmp_path_factory.mktemp("peers")
    data = tiny_run(output, ",".join(["ours", *ready]), "echo,broadcast", timeout=120)
    return data["medians"]["uvicorn"]


@pytest.mark.parametrize("peer", sorted(envs.PEERS))
@pytest.mark.timeout(180)
def test_tiny_run_of_a_peer_when_its_venv_is_built(peers_run: dict[str, dict], peer: str) -> None:
    if peer not in peers_run:
        pytest.skip(
            f"bench/.venv-{peer} is not built with the wanted versions (building it needs the "
            f"package index): run `python -m bench.run --impls {peer}` once"
        )
    figures = peers_run[peer]
    assert figures["async.rps"] > 0 and figures["json.rps"] > 0
    # Every delivery of every broadcast arrived, in one process and across two over Redis.
    assert [value for key, value in figures.items() if key.endswith(".lost")] == [0] * 4


def test_server_list_is_checked() -> None:
    assert parse_args(["--server", "daphne,hypercorn"]).servers == ["daphne", "hypercorn"]
    for bad in ("daphne,nginx", "uvicorn,uvicorn"):
        with pytest.raises(SystemExit):
            parse_args(["--server", bad])


async def test_socketio_framing_of_the_load_generator() -> None:
    """Engine.IO's open packet, the namespace connect, a ping and echo events, as the
    SocketIO client must speak them (a server written from the protocol's description)."""
    seen: list[str] = []
    paths: list[str] = []

    async def handler(connection: ServerConnection) -> None:
        paths.append(connection.request.path if connection.request else "")
        await connection.send('0{"sid":"e1","upgrades":[],"pingInterval":25000}')
        assert await connection.recv() == "40"
        await connection.send("2")  # a ping before the connect is acknowledged
        assert await connection.recv() == "3"
        await connection.send('40{"sid":"s1"}')
        async for frame in connection:
            assert isinstance(frame, str)
            seen.append(frame)
            event, data = json.loads(frame[2:])
            assert frame.startswith("42") and event == "echo"
            await connection.send("42" + json.dumps(["echo", data]))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        base = {
            "mode": "echo",
            "protocol": "socketio",
            "path": "/ws/echo/",
            "ports": [port],
            "server_pids": [os.getpid()],
            "connections": 2,
            "warmup": 0.05,
            "duration": 0.2,
        }
        text = await loadgen.main({**base, "message": "x" * 8})
        structured = await loadgen.main({**base, "raw_json": True, "message": '{"n":1}'})
    assert text["round_trips"] > 0 and structured["round_trips"] > 0
    assert paths and all(path == "/ws/echo/?EIO=4&transport=websocket" for path in paths)
    assert '42["echo","xxxxxxxx"]' in seen and '42["echo",{"n":1}]' in seen


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


def test_redis_benchmark_output_is_read() -> None:
    from bench.harness.scenarios import _redis_benchmark_csv

    csv = (
        '"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",'
        '"p99_latency_ms","max_latency_ms"\n"LPUSH","37735.85","0.892","0.064","0.247",'
        '"4.175","12.751","12.815"\n'
    )
    assert _redis_benchmark_csv(csv, "redis.c50") == {
        "redis.c50.rps": 37735.85,
        "redis.c50.p50_ms": 0.247,
        "redis.c50.p99_ms": 12.751,
    }
    with pytest.raises(RuntimeError, match="no LPUSH line"):
        _redis_benchmark_csv("ERROR: connection refused", "redis.c50")


def test_tiny_scale_scenario_opens_every_connection_and_reaches_each(tmp_path: Path) -> None:
    data = tiny_run(tmp_path, "ours", "scale")
    figures = data["medians"]["uvicorn"]["ours"]
    assert figures["scale.connected"] == 300 and figures["scale.storm_errors"] == 0
    assert figures["scale.lost"] == 0 and figures["scale.p99_ms"] > 0
    assert figures["scale.kib_per_conn"] > 0
    assert figures["scale.srv_ms_per_broadcast"] >= 0 and figures["scale.lg_cpu_pct"] > 0
    assert "| connections open after the storm |" in (tmp_path / "latest.md").read_text()


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_tiny_scale_behind_nginx_reaches_every_client_of_both_servers(tmp_path: Path) -> None:
    """Two server processes behind nginx, the clients spread over load-generator processes
    (``bench.scale_fleet``): every client open, every delivery to each of them counted."""
    data = tiny_run(tmp_path, "ours,bare", "scale2", timeout=60)
    for impl in ("ours", "bare"):
        figures = data["medians"]["uvicorn"][impl]
        assert figures["scale2.connected"] == 600 and figures["scale2.storm_errors"] == 0
        assert figures["scale2.lost"] == 0 and figures["scale2.p99_ms"] > 0
        assert figures["scale2.kib_per_conn"] > 0
    table = (tmp_path / "latest.md").read_text()
    assert "| scale, 2 processes + nginx: broadcast to all, p99 ours/bare |" in table


def test_a_measured_variant_gets_its_own_column_and_ratio() -> None:
    """``--impls ours,bare-adapted`` (Daphne like for like) shows what it measured."""
    rows = [row for row in report.rows((1000,), ()) if row.scenario == "echo"]
    med = {"ours": {"async.rps": 9000.0}, "bare-adapted": {"async.rps": 10000.0}}
    impls = (*report.IMPLS, "bare-adapted")
    text, evaluated = report.markdown(rows, med, {"echo"}, [], ["## On daphne"], None, impls)
    assert "| bare | bare adapted | ours/Channels |" in text
    assert "| ours/bare | ours/bare adapted | target |" in text
    assert "| async consumer: round trips | /s | 9,000 | - | - | - | 10,000 |" in text
    assert evaluated[0]["ours_vs_bare-adapted"] == 0.9


@pytest.mark.parametrize(
    ("ours_load", "bare_load", "ours_rps", "verdict"),
    [
        (50.0, 50.0, 9900.0, True),  # neither held back: judged
        (50.0, 99.0, 9900.0, None),  # bare's rate is a floor: a pass is in doubt
        (50.0, 99.0, 8000.0, False),  # ... a miss is not
        (99.0, 50.0, 8000.0, None),  # ours' rate is a floor: a miss is in doubt
        (99.0, 50.0, 9900.0, True),  # ... a pass is not
    ],
)
def test_a_rate_held_back_by_its_load_generator_is_judged_only_where_it_is_sure(
    ours_load: float, bare_load: float, ours_rps: float, verdict: bool | None
) -> None:
    row = next(row for row in report.rows((1000,), ()) if row.key == "async.rps")
    med = {
        "ours": {"async.rps": ours_rps, "async.lg_cpu": ours_load},
        "bare": {"async.rps": 10000.0, "async.lg_cpu": bare_load},
    }
    result = report.evaluate(row, med)
    assert result["met"] is verdict
    assert bool(result.get("lg_bound")) is (verdict is None)
