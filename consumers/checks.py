"""System checks of the consumers app (``manage.py check``)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning


def check_daphne(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A Daphne whose internals differ from the tested ones runs unadapted: say so."""
    from consumers import daphne

    found = daphne.problems()
    if not found:
        return []
    return [
        Warning(
            "Daphne is not the one consumers was tested with, so it would run without "
            "the adaptations of consumers.daphne (close codes and reasons, accept headers, "
            "slow clients, graceful shutdown): " + "; ".join(found),
            hint=daphne.HINT,
            id="consumers.W001",
        )
    ]
