"""The bare app on Daphne as this project adapts it (``consumers.daphne``: frames written to
the socket at once, the slow-client bound): the like-for-like ceiling on Daphne, whose
stock write path ours no longer takes. On Uvicorn and Hypercorn it is the bare app."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")

from consumers import daphne

daphne.install()

from bench.apps.bare import application  # noqa: E402, F401
