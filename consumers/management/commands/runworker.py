"""``manage.py runworker CHANNEL [CHANNEL ...]``: a thin command over ``consumers.worker``."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from channels_layer import DEFAULT_CHANNEL_LAYER, get_channel_layer
from channels_layer.base import CROSS_PROCESS
from consumers.routing import get_default_application
from consumers.worker import Worker

logger = logging.getLogger("consumers.worker")


class Command(BaseCommand):
    help = "Run background consumers for the named channels (routed by the 'channel' router)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channels", nargs="+", help="Channel names to listen on")
        parser.add_argument(
            "--layer", default=DEFAULT_CHANNEL_LAYER, help="CHANNEL_LAYERS alias to use"
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=1,
            help="Consumer instances per channel handling messages in parallel (default 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["layer"]
        layer = get_channel_layer(alias)
        if layer is None:
            raise CommandError(
                f"Cannot run a worker: no channel layer {alias!r} is configured. "
                "Add it to CHANNEL_LAYERS in your settings."
            )
        if CROSS_PROCESS not in layer.extensions:
            logger.warning(
                "runworker's channel layer %r (%s) does not declare %r in its extensions, "
                "so other processes may not reach it (the in-memory layer only sees messages "
                "sent from inside this process). Use the Redis layer to reach it from others.",
                alias,
                type(layer).__name__,
                CROSS_PROCESS,
            )
        application = get_default_application()
        try:
            worker = Worker(
                application,
                options["channels"],
                layer,
                concurrency=options["concurrency"],
            )
        except (TypeError, ValueError) as error:
            raise CommandError(str(error)) from error
        _check_routed(application, options["channels"])
        worker.run()


def _check_routed(application: Any, channels: list[str]) -> None:
    """Fail at start-up, not at every message, for a channel the 'channel' router lacks."""
    router = getattr(application, "application_mapping", {}).get("channel")
    known = getattr(router, "application_mapping", None)
    if known is None:
        return
    missing = [channel for channel in channels if channel not in known]
    if missing:
        raise CommandError(
            f"No consumer is routed for channel(s) {', '.join(missing)} in ASGI_APPLICATION's "
            f"'channel' router; it knows: {', '.join(sorted(known)) or 'none'}"
        )
