"""``group_send`` to idle broadcast members in ns a member, this tree's eager path against
another tree's, alternating pass by pass in one process (paired: the machine's noise hits
both alike).

    env PYTHONPATH=. taskset -c 0 .venv/bin/python -m bench.bcast9_ab OLD_TREE
        [--members 1000] [--passes 200]

``bench.bcast9_cold``'s setup. "old" swaps in ``EagerReader.handle`` / ``claim`` and
``Mailboxes.put_many`` as ``OLD_TREE``'s ``consumers/eager.py`` and
``channels_layer/mailbox.py`` define them (loaded beside this tree's modules, sharing their
imports); "new" is this tree's. Prints the median and minimum of each and the median of
the paired differences (new - old).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")
os.environ["BENCH_LAYER"] = "memory"

from bench.paired import load_module, report


async def alternate(
    members: int, passes: int, prepare: Callable[[list[Any]], Callable[[str], None]]
) -> int:
    """``members`` idle broadcast members; ``prepare(readers)`` gives ``use(name)``, which
    puts the "new" or the "old" code in place. Broadcasts ``passes`` times with each,
    alternating, prints the paired report and gives the number of members."""
    from bench.apps.routes import GROUP
    from bench.broadcast_timeline import Recorder, disconnect_members, reading_members

    recorder = Recorder(0.0)
    inboxes, tasks, readers = await reading_members(members, recorder)
    use = prepare(readers)
    layer = readers[0]._consumer.channel_layer
    event = {"type": "bench.message", "text": "x" * 32}

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
        use(name)
        found[name].append(broadcast())
    gc.enable()
    use("new")
    report(f"{len(readers)} members, ns a member (thread CPU), {passes} passes each:", found)
    await disconnect_members(inboxes, tasks)
    return len(readers)


def tree_main(run: Callable[[Path, int, int], Coroutine[Any, Any, None]], doc: str) -> None:
    """The command line of a paired broadcast probe: OLD_TREE, --members, --passes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("old_tree", type=Path)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.old_tree, args.members, args.passes))


async def run(old_tree: Path, members: int, passes: int) -> None:
    import django

    django.setup()
    from channels_layer import mailbox
    from consumers import eager

    old_eager = load_module("consumers._old_eager", old_tree / "consumers" / "eager.py")
    old_mailbox = load_module(
        "channels_layer._old_mailbox", old_tree / "channels_layer" / "mailbox.py"
    )
    versions = {
        "new": (eager.EagerReader.handle, eager.EagerReader.claim, mailbox.Mailboxes.put_many),
        "old": (
            old_eager.EagerReader.handle,
            old_eager.EagerReader.claim,
            old_mailbox.Mailboxes.put_many,
        ),
    }

    def use(name: str) -> None:
        handle, claim, put_many = versions[name]
        eager.EagerReader.handle = handle  # type: ignore[method-assign]
        eager.EagerReader.claim = claim  # type: ignore[method-assign]
        mailbox.Mailboxes.put_many = put_many  # type: ignore[method-assign]

    await alternate(members, passes, lambda readers: use)


def main() -> None:
    tree_main(run, __doc__ or "")


if __name__ == "__main__":
    main()
