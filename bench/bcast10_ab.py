"""Issue 20 part 10 (metrics10): ``bench.bcast9_ab`` in two trees, one process each,
alternating (old, new, old, new...): ns of thread CPU a broadcast member, each tree's whole
chain (its metrics included; ``bcast9_ab`` is pointed at its own tree, so both its halves
run that tree's code and their medians are pooled). Prints each process's median, the
medians of those, and in how many pairs new was lower.

    python -m bench.bcast10_ab OLD_TREE NEW_TREE [--pairs 5] [--members 1000]
        [--passes 100] [--python PYTHON]

Run it under ``flock /tmp/bench.lock``; each process is pinned to core 0, as bcast9's runs.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys

from bench.paired import report, run_in_tree


def member_ns(python: str, tree: str, members: int, passes: int) -> float:
    """One process of ``bcast9_ab`` in ``tree`` against itself: the median ns a member."""
    command = ["taskset", "-c", "0", python, "-m", "bench.bcast9_ab", tree]
    output = run_in_tree(tree, [*command, "--members", str(members), "--passes", str(passes)])
    medians = [float(value) for value in re.findall(r"(?:new|old): median (\d+)", output)]
    assert len(medians) == 2, output
    return statistics.mean(medians)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_tree")
    parser.add_argument("new_tree")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    found: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.pairs):
        for name, tree in (("old", args.old_tree), ("new", args.new_tree)):
            found[name].append(member_ns(args.python, tree, args.members, args.passes))
    title = f"ns a member (thread CPU), {args.members} members, {args.pairs} pairs of processes"
    report(title, found, best="runs")


if __name__ == "__main__":
    main()
