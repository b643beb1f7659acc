"""runworker learns from its layer's ``extensions`` whether other processes can reach it."""

import contextlib
import logging
import os
import signal

import pytest
from django.core.management import call_command

from consumers.routing import get_default_application

WORKER_LOG = logging.getLogger("consumers.worker")


class _StopOnceListening(logging.Handler):
    """SIGTERM to this process when the worker says it listens: by then its own handler
    for SIGTERM is in place (installed before the worker starts), so the command returns."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Worker listening on"):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(autouse=True)
def project_loaded():
    """Load the project's application before the test: its first import sets logging up
    again (``django.setup``), which would drop caplog's handler and ours."""
    get_default_application()


@contextlib.contextmanager
def stopped_once_listening():
    before = signal.getsignal(signal.SIGTERM)
    handler = _StopOnceListening()
    WORKER_LOG.addHandler(handler)
    try:
        yield
    finally:
        WORKER_LOG.removeHandler(handler)
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize(
    ("backend", "warned"),
    [
        ("channels_layer.memory.InMemoryChannelLayer", True),
        # In-memory too, but declaring the capability: the declaration decides.
        ("tests.layers.DeclaredCrossProcessLayer", False),
    ],
)
def test_runworker_warns_unless_its_layer_declares_cross_process(settings, caplog, backend, warned):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": backend}}
    with caplog.at_level(logging.INFO, "consumers.worker"), stopped_once_listening():
        call_command("runworker", "log")
    assert "Worker for log stopped" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == (1 if warned else 0), warnings
    assert all("does not declare 'cross_process'" in warning for warning in warnings)
