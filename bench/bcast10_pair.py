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

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
os.environ["BENCH_LAYER"] = "memory"

from bench.bcast9_ab import alternate, tree_main
from bench.paired import load_module


async def run(old_tree: Path, members: int, passes: int) -> None:
    import django

    django.setup()
    from consumers.send_deadline import SendDeadline

    old_timings = load_module(
        "channels_layer._old_timings", old_tree / "channels_layer" / "timings.py"
    )
    old_deadline = load_module(
        "consumers._old_send_deadline", old_tree / "consumers" / "send_deadline.py"
    )
    old_child = old_timings.Timings()  # main's class; this process's own families unchanged

    def prepare(readers: list[Any]) -> Callable[[str], None]:
        consumer = readers[0]._consumer
        timer = consumer._consumers_handling  # the class's: every member's
        send = consumer._asgi_send
        assert type(send) is SendDeadline and send._tally is not None
        versions = {
            "new": (timer.observe, SendDeadline.__call__),
            "old": (old_child.observe, old_deadline.SendDeadline.__call__),
        }

        def use(name: str) -> None:
            timer.observe, SendDeadline.__call__ = versions[name]  # type: ignore[method-assign]

        return use

    count = await alternate(members, passes, prepare)
    assert sum(old_child.read()[0]) == passes * count  # old passes observed there


def main() -> None:
    tree_main(run, __doc__ or "")


if __name__ == "__main__":
    main()
