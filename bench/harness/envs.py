"""The benchmark's own virtualenvs for the peers, kept apart from the project.

Django Channels (with channels-redis) and python-socketio are never dependencies of the
project: each lives in a venv of its own under ``bench/`` (``.venv-channels``,
``.venv-socketio``), built from the package index on first use and reused while its
versions still match. The servers (Daphne, Uvicorn, Hypercorn and the libraries they speak
WebSocket and HTTP with), Django, asgiref, redis-py and msgpack are pinned to the versions
of the project's own venv, so every implementation runs on the same server stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]

# The servers and what they run on: same version as in the project's venv (the one running
# this harness), for a fair server stack. Only those installed there are pinned.
SERVER_STACK = [
    "daphne",
    "Twisted",
    "autobahn",
    "txaio",
    "uvicorn",
    "hypercorn",
    "granian",
    "websockets",
    "wsproto",
    "h11",
    "h2",
    "httptools",
    "uvloop",
    "asgiref",
    "redis",
    "msgpack",
]


@dataclass(frozen=True)
class PeerVenv:
    """One peer's venv: ``specs`` are the peer's own packages, ``extra`` more packages
    pinned to the project's versions, ``prefixes`` the version line each peer package must
    be on."""

    name: str
    specs: tuple[str, ...]
    prefixes: tuple[tuple[str, str], ...]
    extra: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        return BENCH / f".venv-{self.name}"

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.directory / "bench-requirements.json"

    def same_as_project(self) -> list[str]:
        return [name for name in [*SERVER_STACK, *self.extra] if _project_version(name)]

    def requirements(self) -> list[str]:
        pins = [f"{name}=={_project_version(name)}" for name in self.same_as_project()]
        return [*self.specs, *pins]


PEERS = {
    "channels": PeerVenv(
        "channels",
        ("channels==4.3.*", "channels-redis==4.3.*"),
        (("channels", "4.3."), ("channels-redis", "4.3.")),
        extra=("Django",),
    ),
    "socketio": PeerVenv(
        "socketio",
        ("python-socketio==5.*",),
        (("python-socketio", "5."),),
    ),
}


def _project_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    """Versions of ``names`` in the venv of ``python`` (None when missing)."""
    script = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try: out[n] = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", script, *names], capture_output=True, text=True, timeout=60
        )
    except OSError:
        return dict.fromkeys(names)
    if done.returncode != 0:
        return dict.fromkeys(names)
    versions: dict[str, str | None] = json.loads(done.stdout)
    return versions


def ready(peer: PeerVenv) -> bool:
    """Whether the peer's venv exists with the wanted versions (nothing is installed)."""
    if not (peer.python.exists() and peer.marker.exists()):
        return False
    try:
        recorded = json.loads(peer.marker.read_text())
    except ValueError:
        return False
    return recorded == peer.requirements() and _pins_hold(peer)


def ensure_venv(peer: PeerVenv, log: Callable[[str], None] = print) -> Path:
    """Create or reuse the peer's venv; return its python."""
    wanted = peer.requirements()
    where = peer.directory.relative_to(BENCH.parent)
    if ready(peer):
        log(f"reusing {where}")
        return peer.python
    log(f"building {where}: {' '.join(wanted)}")
    if not peer.python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(peer.directory)
    peer.marker.unlink(missing_ok=True)
    subprocess.run(
        [str(peer.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted],
        check=True,
        timeout=900,
    )
    if not _pins_hold(peer):
        raise RuntimeError(f"{peer.directory} does not have the pinned versions after install")
    peer.marker.write_text(json.dumps(wanted))
    return peer.python


def _pins_hold(peer: PeerVenv) -> bool:
    pinned = peer.same_as_project()
    versions = installed_versions(peer.python, [*pinned, *(name for name, _ in peer.prefixes)])
    if any(versions.get(name) != _project_version(name) for name in pinned):
        return False
    return all((versions.get(name) or "").startswith(prefix) for name, prefix in peer.prefixes)


REPORTED = [
    *SERVER_STACK,
    "Django",
    "granian",
    "channels",
    "channels-redis",
    "python-socketio",
    "python-engineio",
]


def versions_report(pythons: dict[str, Path]) -> dict[str, dict[str, str | None]]:
    """The versions that matter, per venv (``pythons``: peer name -> its python), for the
    results' metadata."""
    report = {"project": installed_versions(Path(sys.executable), REPORTED)}
    for name, python in pythons.items():
        report[name] = installed_versions(python, REPORTED)
    return report
