"""Issue 20 part 10 (metrics10): ``bench.frame9_micro`` in two trees, one process each,
alternating (old, new, old, new...) so that the machine's drift hits both alike. Prints
each run's best ns a frame, the medians, and in how many pairs new was lower.

    python -m bench.frame10_ab OLD_TREE NEW_TREE [--path /ws/echo/] [--pairs 8]
        [--frames 50000] [--repeats 10] [--python PYTHON]

Run it under ``flock /tmp/bench.lock``; each process is pinned to core 1, as frame9's runs.
"""

from __future__ import annotations

import argparse
import re
import sys

from bench.paired import report, run_in_tree


def best_ns(python: str, tree: str, path: str, frames: int, repeats: int) -> float:
    """One process of ``frame9_micro`` in ``tree`` (its own modules): its best ns a frame."""
    command = ["taskset", "-c", "1", python, "bench/frame9_micro.py", "ours", path]
    output = run_in_tree(tree, [*command, str(frames), str(repeats)])
    found = re.search(r"best (\d+) ns", output)
    assert found is not None, output
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old_tree")
    parser.add_argument("new_tree")
    parser.add_argument("--path", default="/ws/echo/")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    found: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.pairs):
        for name, tree in (("old", args.old_tree), ("new", args.new_tree)):
            found[name].append(best_ns(args.python, tree, args.path, args.frames, args.repeats))
    title = f"{args.path} ns a frame (best of {args.repeats} x {args.frames}), {args.pairs} pairs"
    report(title, found, best="runs")


if __name__ == "__main__":
    main()
