"""The benchmark's application on Django Channels 4.3 (run in bench/.venv-channels)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_channels")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # sets Django up before the consumers are imported

from bench.apps.routes import build  # noqa: E402

application = build("channels", django_asgi_app)
