"""bench.scale_fleet's shards end when the coordinator gives up on them (a failure before
the "close" command): closing its pipes must reach them at once."""

from __future__ import annotations

import time

from bench.scale_fleet import Fleet


def test_stop_ends_idle_shards_at_once_through_their_pipes() -> None:
    # No connections: each shard only waits for a command, as after a coordinator's failure.
    fleet = Fleet({"connections": 0, "shards": 2})
    began = time.monotonic()
    fleet.stop()
    took = time.monotonic() - began
    # Each shard kept the coordinator's end of its own pipe (and of the pipes made before
    # it) open through fork, so it never saw the end of its input: 15 s each, then SIGKILL.
    assert took < 5, f"stop() took {took:.1f} s"
    assert [process.exitcode for process in fleet.processes] == [0, 0]
