"""Django's ASGI handler alone: the reference for the HTTP scenario."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings_django")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
