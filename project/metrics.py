"""``/metrics``: this process's Prometheus metrics (``consumers.metrics``,
``channels_layer.metrics`` and prometheus_client's process and Python figures).

Each Daphne process answers for itself, so Prometheus (and ``manage.py consumers_top``)
scrapes every process at its own address; nginx refuses ``/metrics`` from outside. The
figures say how busy the site is, so they are answered only to the networks in
``METRICS_ALLOWED_NETWORKS``, to ``Authorization: Bearer <METRICS_TOKEN>`` and to staff
users; anyone else gets a 404, as for a page that does not exist.
"""

from __future__ import annotations

import hmac
import ipaddress
from functools import cache

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


@cache
def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(network.strip(), strict=False)
        for network in getattr(settings, "METRICS_ALLOWED_NETWORKS", ())
        if network.strip()
    ]


def may_read(request: HttpRequest) -> bool:
    """From an allowed network, with the token, or a staff user."""
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        address = None
    if address is not None and any(address in network for network in allowed_networks()):
        return True
    token = getattr(settings, "METRICS_TOKEN", "")
    offered = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
        return True
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def metrics(request: HttpRequest) -> HttpResponse:
    if not may_read(request):
        raise Http404
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
