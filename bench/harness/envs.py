"""The benchmark's own virtualenv for Django Channels, kept apart from the project.

Django Channels and channels-redis are never dependencies of the project: they live in
``bench/.venv-channels``, built from PyPI on first use and reused while its versions still
match. Daphne, Django, Twisted, autobahn, asgiref, redis-py and msgpack are pinned to the
versions of the project's own venv, so both implementations run on the same server stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
CHANNELS_VENV = BENCH / ".venv-channels"
MARKER = CHANNELS_VENV / "bench-requirements.json"

# The implementation under comparison, by the version line the issue names.
CHANNELS_SPECS = ["channels==4.3.*", "channels-redis==4.3.*"]
# Same version as in the project's venv (the one running this harness), for a fair server stack.
SAME_AS_PROJECT = [
    "daphne",
    "Django",
    "Twisted",
    "autobahn",
    "txaio",
    "asgiref",
    "redis",
    "msgpack",
]


def project_pins() -> list[str]:
    """``name==version`` of the shared server stack, read from the running (project) venv."""
    return [f"{name}=={metadata.version(name)}" for name in SAME_AS_PROJECT]


def channels_requirements() -> list[str]:
    return [*CHANNELS_SPECS, *project_pins()]


def channels_python() -> Path:
    return CHANNELS_VENV / "bin" / "python"


def installed_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    """Versions of ``names`` in the venv of ``python`` (None when missing)."""
    script = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run(
        [str(python), "-c", script, *names], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        return dict.fromkeys(names)
    versions: dict[str, str | None] = json.loads(done.stdout)
    return versions


def ensure_channels_venv(log=print) -> Path:
    """Create or reuse ``bench/.venv-channels``; return its python."""
    wanted = channels_requirements()
    python = channels_python()
    if python.exists() and MARKER.exists():
        try:
            recorded = json.loads(MARKER.read_text())
        except ValueError:
            recorded = None
        if recorded == wanted and _pins_hold(python):
            log(f"reusing {CHANNELS_VENV.relative_to(BENCH.parent)}")
            return python
    log(f"building {CHANNELS_VENV.relative_to(BENCH.parent)}: {' '.join(wanted)}")
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(CHANNELS_VENV)
    MARKER.unlink(missing_ok=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted],
        check=True,
        timeout=900,
    )
    if not _pins_hold(python):
        raise RuntimeError(f"{CHANNELS_VENV} does not have the pinned versions after install")
    MARKER.write_text(json.dumps(wanted))
    return python


def _pins_hold(python: Path) -> bool:
    versions = installed_versions(python, [*SAME_AS_PROJECT, "channels", "channels-redis"])
    for name in SAME_AS_PROJECT:
        if versions.get(name) != metadata.version(name):
            return False
    channels, channels_redis = versions.get("channels"), versions.get("channels-redis")
    return bool(channels and channels.startswith("4.3.")) and bool(
        channels_redis and channels_redis.startswith("4.3.")
    )


def versions_report(channels_py: Path | None) -> dict[str, dict[str, str | None]]:
    """The versions that matter, per venv, for the results' metadata."""
    names = [*SAME_AS_PROJECT, "channels", "channels-redis", "websockets", "uvicorn", "hypercorn"]
    report = {"project": installed_versions(Path(sys.executable), names)}
    if channels_py is not None:
        report["channels"] = installed_versions(channels_py, names)
    return report
