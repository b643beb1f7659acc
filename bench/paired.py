"""What the A/B probes share: another tree's module loaded beside this tree's, one probe
process run in a tree, and the report of old against new (medians and the paired
differences, new - old)."""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any


def load_module(name: str, path: Path) -> Any:
    """The module at ``path`` (another tree's), under ``name``, sharing this tree's imports."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_tree(tree: str, command: list[str]) -> str:
    """The output of ``command`` run in ``tree``, on that tree's modules."""
    return subprocess.run(
        command,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": "."},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def report(title: str, found: dict[str, list[float]], best: str = "min") -> None:
    """Print ``title``, each side's median and best (``min``) or its runs (``runs``), and
    the paired differences' median with how often new was lower."""
    print(title)
    for name, values in found.items():
        extra = f"min {min(values):.0f}" if best == "min" else f"runs {values}"
        print(f"  {name}: median {statistics.median(values):.0f}, {extra}")
    differences = [new - old for new, old in zip(found["new"], found["old"], strict=True)]
    lower = sum(difference < 0 for difference in differences)
    print(
        f"  new - old, paired: median {statistics.median(differences):+.0f} "
        f"(new lower in {lower} of {len(differences)})"
    )
