"""Programs run as real child processes by tests and the benchmark.

Output (stdout and stderr together) is read by a thread into ``lines`` (and a log file when
asked), so a chatty process never blocks on a full pipe and every wait has a deadline:
``wait_for`` a line, or ``read_json`` for the JSON-line workers the benchmark drives over
stdin. ``stop`` is SIGTERM, then SIGKILL, to the process (or its whole process group when
it was started in one of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT_SETTINGS = "project.settings"


class Process:
    """One program, from ``cwd`` (the project directory by default).

    ``env``: variables over this process's environment (None removes one). ``settings``: the
    DJANGO_SETTINGS_MODULE it gets unless ``env`` names one (None: whatever the environment
    has). ``own_group``: start it in a process group of its own, stopped as
    a whole. ``stdin``: keep a pipe to it open for ``request``. ``log_path``: also write its
    output there. ``preexec_fn`` runs in the child before exec (e.g. to raise a limit).
    """

    def __init__(
        self,
        *argv: str,
        env: Mapping[str, str | None] | None = None,
        cwd: Path = ROOT,
        settings: str | None = PROJECT_SETTINGS,
        name: str = "",
        log_path: Path | None = None,
        stdin: bool = False,
        own_group: bool = False,
        preexec_fn: Callable[[], Any] | None = None,
    ) -> None:
        base: dict[str, str | None] = {**os.environ}
        if settings is not None:
            base["DJANGO_SETTINGS_MODULE"] = settings
        merged = {**base, **(env or {})}
        self.name = name or Path(argv[0]).name
        self.log_path = log_path
        self.own_group = own_group
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env={name: value for name, value in merged.items() if value is not None},
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=own_group,
            preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._json_from = 0  # the first line ``read_json`` has not looked at
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        log: IO[str] | None = None
        if self.log_path is not None:
            log = open(self.log_path, "w")  # noqa: SIM115 - closed when the output ends
        try:
            for line in self.process.stdout:
                if log is not None:
                    log.write(line)
                    log.flush()
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        finally:
            if log is not None:
                log.close()
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def tail(self, count: int = 30) -> str:
        """The last ``count`` lines of output, for error messages."""
        return "".join(self.lines[-count:])

    def _find(self, matches: Callable[[str], bool], start: int, timeout: float) -> int | None:
        """The index of the first line from ``start`` on that ``matches``; -1 if the output
        ended without one, None if none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        index = start
        with self._changed:
            while True:
                while index < len(self.lines):
                    if matches(self.lines[index]):
                        return index
                    index += 1
                if self._ended:
                    return -1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def wait_for(self, text: str, timeout: float = 20) -> None:
        """Return once a line containing ``text`` was printed; fail with the output if not."""
        found = self._find(lambda line: text in line, 0, timeout)
        if found == -1:
            raise AssertionError(f"{self.name} exited before printing {text!r}:\n{self.output}")
        if found is None:
            raise AssertionError(f"{self.name}: no {text!r} within {timeout} s:\n{self.output}")

    def ready(self, text: str, timeout: float = 20) -> Process:
        """``wait_for(text)``, stopping the process if it never comes (nothing leaks)."""
        try:
            self.wait_for(text, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON line (one starting with ``{``) it prints; an ``error`` key in it
        is raised."""
        found = self._find(lambda line: line.startswith("{"), self._json_from, timeout)
        if found is None:
            raise TimeoutError(f"{self.name}: no reply in {timeout} s\n{self.tail()}")
        if found == -1:
            raise RuntimeError(f"{self.name} exited ({self.process.poll()})\n{self.tail()}")
        self._json_from = found + 1
        reply: dict[str, Any] = json.loads(self.lines[found])
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    def request(self, command: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Send one JSON line on stdin (started with ``stdin=True``) and read the reply."""
        assert self.process.stdin is not None, "started without stdin=True"
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.read_json(timeout)

    def signal(self, number: int) -> None:
        """Send a signal to the process (to its group if it has its own)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.own_group:
                os.killpg(self.process.pid, number)
            else:
                self.process.send_signal(number)

    def finish(self, timeout: float, grace: float = 30) -> int | None:
        """Wait for it to exit by itself and read its output to the end; its exit code, or
        None if it ran past ``timeout`` (it is then stopped, with ``grace`` seconds after
        SIGTERM to clean up)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(grace)
            return None
        return self.stop()

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        stop_all([self], timeout)
        return self.process.wait()


class ManagePy(Process):
    """``python manage.py ARGS`` with the project's settings."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(sys.executable, "manage.py", *args, env=env)


def run_manage_py(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> ManagePy:
    """Run ``manage.py ARGS`` to its end; fail with its output unless it exits with 0."""
    command = ManagePy(*args, env=env)
    code = command.finish(timeout)
    if code != 0:
        late = f"took over {timeout:g} s" if code is None else f"failed ({code})"
        raise AssertionError(f"manage.py {args[0]} {late}:\n{command.output}")
    return command


def stop_all(processes: Iterable[Process], timeout: float = 10) -> None:
    """SIGTERM every process still running at once, then wait for them together; SIGKILL
    the ones still there at the deadline. Their output is read to the end."""
    processes = list(processes)
    for process in processes:
        if process.alive():
            process.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.signal(signal.SIGKILL)
            process.process.wait(10)
    for process in processes:
        if process.process.stdin is not None:
            with contextlib.suppress(OSError):
                process.process.stdin.close()
        process._drainer.join(5)


def wait_for_port(process: Process, port: int, timeout: float = 30.0) -> None:
    """Return once ``port`` on loopback accepts connections; fail with the output if the
    process exits first or the port stays closed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited ({process.process.poll()}):\n{process.tail()}"
            )
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{process.name} did not listen on {port} within {timeout} s")
