"""Processes the harness starts: pinned to a core, in their own process group, always stopped.

Every process is started through ``Processes.start`` and registered there; ``stop_all``
(called from ``finally`` blocks and on SIGTERM/SIGINT) sends SIGTERM to each process group,
then SIGKILL to what is left. Pinning uses ``taskset -c`` when it exists; without it (a
minimal CI image) processes run unpinned and the results say so. The processes themselves
are ``testsupport.processes.Process``, as in the tests.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
from collections.abc import Sequence
from pathlib import Path

from testsupport.processes import ROOT, Process, stop_all
from testsupport.system import raise_open_files_limit

SERVER_CORE, LOAD_CORE = 0, 1
STOP_TIMEOUT = 5.0
# Open files every started process may have: the scale scenario's 10,000 connections and
# more on one side (the hard limit too is raised to it where the harness may, e.g. as root).
OPEN_FILES = 65536


def raise_limits() -> None:
    """In a started child, before exec: its open-files limit up to ``OPEN_FILES``, or the
    hard limit where raising that is not allowed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < OPEN_FILES:
        with contextlib.suppress(ValueError, OSError):  # unprivileged: the hard limit stays
            resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    raise_open_files_limit()


def taskset() -> str | None:
    if os.environ.get("BENCH_NO_TASKSET"):
        return None
    return shutil.which("taskset")


def pinning_available() -> bool:
    return taskset() is not None and (os.cpu_count() or 1) >= 2


class Processes:
    """Starts and tracks every process of a run; each one's output goes to a log file in
    ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Process] = []
        self.started: list[int] = []  # every pid ever started, for the record and for tests

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        core: int | None,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        pipe: bool = False,
    ) -> Process:
        """Start ``argv`` pinned to ``core`` (when pinning is available); ``pipe``: keep
        its stdin open for JSON-line requests. The open-files limit is raised in the child
        (``raise_limits``)."""
        command = list(argv)
        tool = taskset()
        if core is not None and tool and pinning_available():
            command = [tool, "-c", str(core), *command]
        proc = Process(
            *command,
            env=env,
            cwd=cwd,
            settings=None,
            name=name,
            log_path=self.log_dir / f"{len(self.started) + 1:03d}-{name}.log",
            stdin=pipe,
            own_group=True,  # its own process group, stopped as a whole
            preexec_fn=raise_limits,
        )
        self.procs.append(proc)
        self.started.append(proc.pid)
        return proc

    def stop(self, proc: Process) -> None:
        proc.stop(STOP_TIMEOUT)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        stop_all(self.procs, STOP_TIMEOUT)
        self.procs.clear()
