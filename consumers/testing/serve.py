"""The child process of ``ChannelsLiveServerTestCase``: ``python -m consumers.testing.serve``.

Runs Daphne on ``settings.ASGI_APPLICATION`` at a port the OS picks, prints
``LISTENING <host> <port>`` on stdout once it listens, and stops on SIGTERM/SIGINT or when
its stdin closes (so it cannot outlive a test process that was killed outright). Settings
the test process changed, such as ``DATABASES`` pointing at the test database, arrive as
JSON in the environment variable named by ``SETTINGS_ENV``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

# Daphne installs Twisted's asyncio reactor when imported, which only works before
# anything else imports Twisted: keep this above every import that could.
import daphne.server
import django
from django.conf import settings

from consumers.testing.live import SETTINGS_ENV


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--static", action="store_true", help="serve static files too")
    args = parser.parse_args(argv)

    # Before setup: nothing may have opened a connection with the project's own settings.
    for name, value in json.loads(os.environ.get(SETTINGS_ENV, "{}")).items():
        setattr(settings, name, value)
    django.setup()

    from twisted.internet import reactor

    from consumers.routing import get_default_application

    # Any: django-stubs accept only Django's own handler inside ASGIStaticFilesHandler.
    application: Any = get_default_application()
    if args.static:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        # It only intercepts HTTP requests under STATIC_URL; other scopes pass through.
        application = ASGIStaticFilesHandler(application)

    def report() -> None:
        host, port = server.listening_addresses[0]
        print(f"LISTENING {host} {port}", flush=True)
        # Nobody reads the pipe from now on; later prints must not fill it and block.
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    server = daphne.server.Server(
        application=application,
        endpoints=[f"tcp:port=0:interface={args.host}"],
        signal_handlers=True,
        # Called once the endpoint is set up but before the reactor runs.
        ready_callable=lambda: reactor.callWhenRunning(report),
    )

    def stop_when_parent_goes() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read makes the
        # interpreter abort at exit.
        while os.read(sys.stdin.fileno(), 4096):
            pass
        reactor.callFromThread(server.stop)

    threading.Thread(target=stop_when_parent_goes, daemon=True).start()
    server.run()
    if not server.listening_addresses:
        sys.exit("Daphne did not start listening")


if __name__ == "__main__":
    main()
