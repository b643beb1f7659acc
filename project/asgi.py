"""The ASGI application: HTTP to Django, WebSockets to consumers, worker channels to workers."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Set Django up (apps, settings) before anything imports models.
django_asgi_app = get_asgi_application()

from consumers.auth import AuthMiddlewareStack  # noqa: E402
from consumers.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from consumers.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from project.routing import channel_routes, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
        "channel": channel_routes,
    }
)
