"""Run programs and project commands as real processes in tests; wait for what they print."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """A program run from the project directory, with its output collected by a thread, so
    waiting for a line has a deadline and a chatty process never blocks on a full pipe."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 20) -> None:
        """Return once a line containing ``text`` was printed; fail with the output if not."""
        deadline = time.monotonic() + timeout
        if any(text in line for line in self.lines):
            return
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"exited before printing {text!r}:\n{self.output}")
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout} s:\n{self.output}")

    def ready(self, text: str, timeout: float = 20) -> Process:
        """``wait_for(text)``, stopping the process if it never comes (nothing leaks)."""
        try:
            self.wait_for(text, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


class ManagePy(Process):
    """``python manage.py ARGS``."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(sys.executable, "manage.py", *args, env=env)
