"""What the probes that start the broadcast scenario's real servers share (``gc_log``,
``bcast_cpu``, ``bcast_profile``): the harness's context for one server, with ours as
this tree is and, if asked for, ours at an earlier revision as "base"."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import scenarios
from bench.harness.procs import Processes
from bench.harness.scenarios import PROFILES, ROOT, Context, make_impls


def source_at(revision: str, target: Path) -> Path:
    """The library (``consumers``, ``channels_layer``) as it was at ``revision``."""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision, "consumers", "channels_layer"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)  # noqa: S607
    return target


def probe_context(temp_dir: Path, server: str, tag: str, base: str | None = None) -> Context:
    """The harness's quick-profile context for ``server``, its processes under ``temp_dir``;
    ``base``: a revision to add as the impl "base" beside "ours"."""
    impls = make_impls(Path(sys.executable), None, scenarios.snapshot_source(temp_dir / "ours"))
    if base is not None:
        old = source_at(base, temp_dir / "base")
        impls["base"] = dataclasses.replace(impls["ours"], name="base", pythonpath=[old, ROOT])
    (temp_dir / "procs").mkdir()
    return Context(
        procs=Processes(temp_dir / "procs"),
        impls=impls,
        profile=PROFILES["quick"],
        redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"),
        prefix=f"{tag}-{os.getpid()}-{int(time.time())}",
        server=server,
    )
