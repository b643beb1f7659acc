"""What the kernel says about processes and ports: a free port, RSS and CPU time from /proc,
the open-files limit."""

from __future__ import annotations

import os
import resource
import socket

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port the OS had free a moment ago (bind to it soon)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> int:
    """A process's resident memory (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid} (a zombie?)")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds (10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        data = stat.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raise_open_files_limit(needed: int | None = None) -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (default: the hard limit) as
    far as the hard limit allows; returns the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if needed is None else needed
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard
