"""Issue 20 part 10 (metrics10): the metrics' share of a frame, this tree's against another
tree's, alternating run by run in one process (paired): ``bench.frame9_micro``'s echo, best
ns a frame of each.

    env PYTHONPATH=. taskset -c 1 .venv/bin/python -m bench.frame10_pair OLD_TREE
        [--path /ws/echo/] [--frames 50000] [--runs 30]

"old" swaps in what ``OLD_TREE``'s ``channels_layer/timings.py`` and
``consumers/send_deadline.py`` define, as ``bench.bcast10_pair`` does: each handler timer
observing into an old ``Timings`` (with the lock), and ``SendDeadline.__call__`` (the
watch's ``sent`` called for every frame). Everything else is this tree's in both.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from pathlib import Path

from bench.echo_probe import application_for
from bench.frame9_micro import echo
from bench.paired import load_module, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_tree", type=Path)
    parser.add_argument("--path", default="/ws/echo/")
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    application, _, _ = application_for(["ours"])
    from consumers import metrics
    from consumers.send_deadline import SendDeadline

    old_timings = load_module(
        "channels_layer._old_timings", args.old_tree / "channels_layer/timings.py"
    )
    old_deadline = load_module(
        "consumers._old_deadline", args.old_tree / "consumers/send_deadline.py"
    )
    asyncio.run(echo(application, args.path, 1_000))  # the class's timers made
    timers = [o for o in gc.get_objects() if type(o) is metrics._Handling]
    versions = {
        "new": ([timer.observe for timer in timers], SendDeadline.__call__),
        "old": (
            [old_timings.Timings().observe for _ in timers],
            old_deadline.SendDeadline.__call__,
        ),
    }
    found: dict[str, list[float]] = {"new": [], "old": []}
    for run in range(args.runs * 2):
        name = ("new", "old")[run % 2]
        observers, call = versions[name]
        for timer, observe in zip(timers, observers, strict=True):
            timer.observe = observe
        SendDeadline.__call__ = call  # type: ignore[method-assign]
        found[name].append(asyncio.run(echo(application, args.path, args.frames)))
    report(f"{args.path} ns a frame, {args.runs} runs of {args.frames} frames each:", found)


if __name__ == "__main__":
    main()
