"""``manage.py consumers_top URL [URL ...]``: a live table of the site's processes, read from
each one's ``/metrics`` (a thin command over ``consumers.top``)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from consumers.top import watch


class Command(BaseCommand):
    help = (
        "Show each process's connections, groups, message rates and deepest queue, "
        "refreshed live, from its /metrics (host:port or a URL)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("targets", nargs="+", help="host:port or URL of each process")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes")
        parser.add_argument("--token", default="", help="sent as Authorization: Bearer TOKEN")
        parser.add_argument(
            "--once", action="store_true", help="one table (two scrapes), then exit"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # A terminal is redrawn in place; a pipe or file gets one table after another.
        clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""

        def show(table: str) -> None:
            self.stdout.write(clear + table + "\n")
            self.stdout.flush()

        with contextlib.suppress(KeyboardInterrupt):
            watch(
                options["targets"],
                options["interval"],
                show,
                token=options["token"],
                rounds=1 if options["once"] else None,
            )
