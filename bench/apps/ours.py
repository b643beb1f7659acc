"""The benchmark's application on this project's packages (``consumers``, ``channels_layer``)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_ours")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()  # sets Django up before the consumers are imported

from bench.apps.routes import build  # noqa: E402

application = build("consumers", django_asgi_app)
