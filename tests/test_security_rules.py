"""No pickle, marshal, shelve, eval or exec in our code: ruff's S rules (flake8-bandit) and
the banned modules in pyproject.toml, run here with the project's own configuration so that
the README's test command checks it too.

Static rules see imports and calls as written; a name built at run time
(``__import__("pickle")``, ``import_module("pickle")``, ``getattr(builtins, "eval")``) is
for tests/chat/test_security.py's audit hook, which watches a message travel the whole stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["consumers", "channels_layer", "chat", "project"]

# Each spelling and the rule that must flag it.
FLAGGED = {
    "import pickle": "TID251",
    "import pickle as p": "TID251",
    "from pickle import loads": "TID251",
    "import _pickle": "TID251",
    "import pickletools": "TID251",
    "import copyreg": "TID251",
    "import dill": "TID251",
    "import cloudpickle": "TID251",
    "import jsonpickle": "TID251",
    "import marshal, json": "TID251",
    "from marshal import loads": "TID251",
    "from shelve import open": "TID251",
    "eval('1')": "S307",
    "import builtins\nbuiltins.eval('1')": "S307",
    "exec('x = 1')": "S102",
}
# Redis' EVAL/EVALSHA (Lua on the server) and the word in prose are not Python's eval.
ALLOWED = ["client.eval(SCRIPT, 1, 'k')", "r.evalsha(sha, 0)", "'never pickle'", "x = 1"]


def security_findings(*paths: str, source: str | None = None) -> list[str]:
    """The S and TID findings of ``ruff check`` with the project's configuration, as
    "path:line: CODE"; ``source`` is checked as if it were the file ``paths[0]``."""
    command = [sys.executable, "-m", "ruff", "check", "--output-format", "json", "--exit-zero"]
    if source is not None:
        command += ["--stdin-filename", paths[0], "-"]
    else:
        command += list(paths)
    run = subprocess.run(
        command, cwd=ROOT, input=source, capture_output=True, text=True, timeout=60, check=True
    )
    return [
        f"{Path(found['filename']).relative_to(ROOT)}:{found['location']['row']}: {found['code']}"
        for found in json.loads(run.stdout)
        if found["code"] and found["code"].startswith(("S", "TID"))
    ]


def test_the_rules_flag_every_spelling_in_library_code():
    for source, code in FLAGGED.items():
        found = security_findings("consumers/sample.py", source=source)
        assert any(finding.endswith(f": {code}") for finding in found), (source, found)
    for source in ALLOWED:
        assert security_findings("consumers/sample.py", source=source) == [], source


def test_nothing_on_a_message_path_imports_pickle_or_calls_eval_or_exec():
    listed = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--show-files", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    # The packages are where the test thinks they are, and ruff reads them.
    assert len(listed) >= 40, listed
    for package in PACKAGES:
        assert any(Path(path).is_relative_to(ROOT / package) for path in listed), package
    assert security_findings(*PACKAGES) == []
