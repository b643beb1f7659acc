"""Medians of ``bench.gc_log`` outputs: ``python -m bench.gc_summary FILE.json [SIZE]``."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    size = int(args[1]) if len(args) > 1 else 1000
    runs = [run for run in json.loads(Path(args[0]).read_text()) if run["size"] == size]
    by_impl: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_impl[run["impl"]].append(run)
    for impl, found in by_impl.items():
        p99 = [run["p99_ms"] for run in found]
        p50 = [run["p50_ms"] for run in found]
        print(
            f"{impl:5} {size}: p99 median {statistics.median(p99):.2f} ms "
            f"(rounds {', '.join(f'{v:.1f}' for v in p99)}), p50 median "
            f"{statistics.median(p50):.2f}; collections in measured broadcasts "
            f"{[run['collections_measured'] for run in found]}, warm-up "
            f"{[run['phase_warmup'][0] for run in found]}, storm "
            f"{[run['phase_storm'][0] for run in found]}, full ms "
            f"{[run['full_ms'] for run in found]}"
        )


if __name__ == "__main__":
    main()
