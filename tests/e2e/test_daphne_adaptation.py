"""``consumers.daphne`` checks Daphne's shape before it changes anything: a Daphne that
differs from the tested one is reported by ``manage.py check`` and at start-up, once, and
left as it is. Simulated here by changing what the module inspects."""

from __future__ import annotations

import io
import logging

import daphne
import pytest
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.core.management import call_command

from consumers import daphne as adaptation


@pytest.fixture
def not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """install() as in a fresh process; Daphne's methods restored afterwards."""
    monkeypatch.setattr(adaptation, "_installed", False)
    monkeypatch.setattr(adaptation, "_warned", set())
    monkeypatch.setattr(Server, "listen_success", Server.listen_success)


def run_check() -> str:
    out = io.StringIO()
    call_command("check", stdout=out, stderr=out)
    return out.getvalue()


def test_the_installed_daphne_has_the_tested_shape() -> None:
    assert adaptation.problems() == []
    assert "consumers.W001" not in run_check()


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (("version", "5.0.0"), "Daphne 5.0.0 is outside the tested range"),
        ((WebSocketProtocol, "sendCloseFrame"), "WebSocketProtocol.sendCloseFrame is missing"),
        ((Server, "kill_all_applications"), "Server.kill_all_applications is missing"),
    ],
    ids=["version", "protocol-method", "server-method"],
)
def test_check_reports_a_daphne_of_another_shape_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, change: tuple, reported: str
) -> None:
    target, name = change
    if target == "version":
        monkeypatch.setattr(daphne, "__version__", name)
    else:
        # Hidden all the way up the hierarchy, as if a release had renamed it.
        for cls in target.__mro__:
            if name in vars(cls):
                monkeypatch.delattr(cls, name)
    output = run_check()
    assert "consumers.W001" in output
    assert reported in output
    assert "HINT: Install the Daphne release in pyproject.toml" in output


def test_install_changes_nothing_and_warns_once_when_the_shape_differs(
    monkeypatch: pytest.MonkeyPatch, not_installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(daphne, "__version__", "4.9.0")
    listen_success = Server.listen_success
    with caplog.at_level(logging.WARNING, logger="consumers.daphne"):
        adaptation.install()
        adaptation.install()
    assert Server.listen_success is listen_success
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "runs unadapted" in warnings[0] and "4.9.0" in warnings[0]


def test_install_patches_listen_success_only_once(not_installed: None) -> None:
    daphne_listen_success = Server.listen_success
    adaptation.install()
    adapted = Server.listen_success
    adaptation.install()
    assert Server.listen_success is adapted is not daphne_listen_success
    assert adapted.__wrapped__ is daphne_listen_success
