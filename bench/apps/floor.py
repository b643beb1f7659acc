"""The benchmark's consumers on ``bench.floor``, the Channels API at its least work."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_django")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from bench.apps.routes import build  # noqa: E402

application = build("bench.floor", django_asgi_app)
