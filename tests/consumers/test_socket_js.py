"""The JavaScript client's unit checks (socket_js.test.js) under node's own test runner;
the browser test (tests/e2e/test_chat_recovery_browser.py) covers it against a real server."""

import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="needs node (Debian's nodejs)")
def test_the_javascript_client_passes_its_unit_checks():
    script = Path(__file__).with_name("socket_js.test.js")
    run = subprocess.run([NODE, "--test", str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout
