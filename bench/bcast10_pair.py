"""Issue 20 part 10 (metrics10): the metrics' share of a broadcast member, this tree's
against another tree's, alternating pass by pass in one process (paired, as
``bench.bcast9_ab``, whose setup this is).

    env PYTHONPATH=. taskset -c 0 .venv/bin/python -m bench.bcast10_pair OLD_TREE
        [--members 1000] [--passes 200]

"old" swaps in what ``OLD_TREE``'s ``channels_layer/timings.py`` and
``consumers/send_deadline.py`` define: the members' handler timer observing into an old
``Timings`` (its ``observe``, with the lock) and ``SendDeadline.__call__`` (the watch's
``sent`` called for every frame). "new" is this tree's. Everything else is this tree's in
both. Prints the median and minimum of each, ns of thread CPU a member, and the median of
the paired differences (new - old).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
os.environ["BENCH_LAYER"] = "memory"

from bench.paired import load_module, report


async def run(old_tree: Path, members: int, passes: int) -> None:
    import django

    django.setup()
    from bench.apps.routes import GROUP
    from bench.broadcast_timeline import Recorder, disconnect_members, reading_members
    from consumers.send_deadline import SendDeadline

    old_timings = load_module(
        "channels_layer._old_timings", old_tree / "channels_layer" / "timings.py"
    )
    old_deadline = load_module(
        "consumers._old_send_deadline", old_tree / "consumers" / "send_deadline.py"
    )
    recorder = Recorder(0.0)
    inboxes, tasks, readers = await reading_members(members, recorder)
    consumer = readers[0]._consumer
    layer = consumer.channel_layer
    event = {"type": "bench.message", "text": "x" * 32}
    timer = consumer._consumers_handling  # the class's: every member's
    assert type(consumer._asgi_send) is SendDeadline and consumer._asgi_send._tally is not None
    old_child = old_timings.Timings()  # main's class; this process's own families unchanged
    versions = {
        "new": (timer.observe, SendDeadline.__call__),
        "old": (old_child.observe, old_deadline.SendDeadline.__call__),
    }

    def broadcast() -> float:
        started = time.thread_time_ns()
        step = layer.group_send(GROUP, event).__await__()
        for _ in step:
            raise RuntimeError("suspended")
        spent = (time.thread_time_ns() - started) / len(readers)
        recorder.stamps.clear()
        return spent

    found: dict[str, list[float]] = {"new": [], "old": []}
    gc.disable()
    for number in range(passes * 2):
        name = ("new", "old")[number % 2]
        timer.observe, SendDeadline.__call__ = versions[name]  # type: ignore[method-assign]
        found[name].append(broadcast())
    gc.enable()
    timer.observe, SendDeadline.__call__ = versions["new"]  # type: ignore[method-assign]
    assert sum(old_child.read()[0]) == passes * len(readers)  # old passes observed there
    report(f"{len(readers)} members, ns a member (thread CPU), {passes} passes each:", found)
    await disconnect_members(inboxes, tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_tree", type=Path)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.old_tree, args.members, args.passes))


if __name__ == "__main__":
    main()
