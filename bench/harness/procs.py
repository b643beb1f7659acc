"""Processes the harness starts: pinned to a core, in their own process group, always stopped.

Every process is started through ``Processes.start`` and registered there; ``stop_all``
(called from ``finally`` blocks and on SIGTERM/SIGINT) sends SIGTERM to each process group,
then SIGKILL to what is left. Pinning uses ``taskset -c`` when it exists; without it (a
minimal CI image) processes run unpinned and the results say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, LOAD_CORE = 0, 1


def taskset() -> str | None:
    if os.environ.get("BENCH_NO_TASKSET"):
        return None
    return shutil.which("taskset")


def pinning_available() -> bool:
    return taskset() is not None and (os.cpu_count() or 1) >= 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        data = stat.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _raise_open_files() -> None:  # runs in the child before exec
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proc:
    """One started process; output goes to a log file (or a pipe for JSON-line workers)."""

    def __init__(self, name: str, popen: subprocess.Popen[str], log_path: Path | None) -> None:
        self.name, self.popen, self.log_path = name, popen, log_path
        self._lines: queue.Queue[str | None] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # JSON-line protocol (workers started with pipe=True) ------------------------------

    def _reader(self) -> queue.Queue[str | None]:
        if self._lines is None:
            self._lines = queue.Queue()
            stdout: IO[str] = self.popen.stdout  # type: ignore[assignment]
            lines = self._lines

            def pump() -> None:
                for line in stdout:
                    lines.put(line)
                lines.put(None)

            threading.Thread(target=pump, daemon=True).start()
        return self._lines

    def read_json(self, timeout: float) -> dict[str, Any]:
        lines = self._reader()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no reply in {timeout} s\n{self.log_tail()}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.popen.poll()})\n{self.log_tail()}")
            if line.startswith("{"):
                reply: dict[str, Any] = json.loads(line)
                if "error" in reply:
                    raise RuntimeError(f"{self.name}: {reply['error']}")
                return reply

    def request(self, command: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command) + "\n")
        self.popen.stdin.flush()
        return self.read_json(timeout)


class Processes:
    """Starts and tracks every process of a run."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        self.started: list[int] = []  # every pid ever started, for the record and for tests
        self._counter = 0

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        core: int | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        pipe: bool = False,
    ) -> Proc:
        command = list(argv)
        tool = taskset()
        if core is not None and tool and pinning_available():
            command = [tool, "-c", str(core), *command]
        self._counter += 1
        log_path = self.log_dir / f"{self._counter:03d}-{name}.log"
        log = open(log_path, "w")  # noqa: SIM115 - handed to the child, closed below
        try:
            popen = subprocess.Popen(
                command,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdin=subprocess.PIPE if pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else log,
                stderr=log,
                text=True,
                start_new_session=True,  # its own process group, killed as a whole
                preexec_fn=_raise_open_files,
            )
        finally:
            log.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        self.started.append(popen.pid)
        return proc

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        if proc.alive():
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout)
        for stream in (proc.popen.stdin, proc.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def wait_for_port(proc: Proc, port: int, timeout: float = 30.0) -> None:
    """Return once ``port`` accepts connections; fail with the log if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.poll()}):\n{proc.log_tail()}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not listen on {port} within {timeout} s")
