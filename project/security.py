"""Production safety of the reference project, by construction.

- ``require_secret_key``: with DEBUG off the project refuses to start on a missing, known or
  weak SECRET_KEY (the same rules as ``check --deploy``), instead of signing sessions with a
  key anyone can read in this repository.
- ``SettingsFilter``: the debug page and error e-mails show settings; Django's filter hides
  names with KEY, SECRET, PASS... but not the Redis and database URLs, which carry passwords.
- ``ContentSecurityPolicyMiddleware``: scripts, styles and sockets from this site only, so
  injected markup could not run code even if a template forgot to escape it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.debug import SafeExceptionReporterFilter

# Keys this repository once shipped or documents as placeholders: public, so never valid.
KNOWN_KEYS = frozenset(
    {
        "dev-only-insecure-key-change-me",
        "change-me-insecure-compose-default",
        "a-long-random-string",
    }
)
# Only with DEBUG on (runserver on a developer's machine), never in production.
DEVELOPMENT_KEY = "dev-only-insecure-key-change-me"
GENERATE = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"


def require_secret_key(key: str | None, debug: bool) -> str:
    """The key to use; raises ImproperlyConfigured when DEBUG is off and it is unsafe."""
    if debug:
        return key or DEVELOPMENT_KEY
    if not key:
        problem = "DJANGO_SECRET_KEY is not set"
    elif key in KNOWN_KEYS or "change-me" in key or key.startswith("django-insecure-"):
        problem = "DJANGO_SECRET_KEY is a published placeholder"
    elif len(key) < 50 or len(set(key)) < 5:
        problem = "DJANGO_SECRET_KEY is too weak (50 characters or more, 5 different at least)"
    else:
        return key
    raise ImproperlyConfigured(
        f"{problem}: refusing to start with DEBUG off. Generate one with: {GENERATE} "
        "(or set DJANGO_DEBUG=1 on a development machine)."
    )


class SettingsFilter(SafeExceptionReporterFilter):
    """Django's filter, also hiding the Redis and database URLs and the layer's hosts."""

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL|REDIS_URL|^hosts$|^location$",
        flags=re.IGNORECASE,
    )


class ContentSecurityPolicyMiddleware:
    """Adds ``Content-Security-Policy``: everything from this origin only, WebSockets to
    this host (``connect-src 'self'`` does not cover ``ws:`` in every browser)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = (
                "default-src 'self'; "
                f"connect-src {' '.join(self.socket_sources(request))}; "
                "img-src 'self' data:; "
                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
            )
        return response

    @staticmethod
    def socket_sources(request: HttpRequest) -> list[str]:
        try:
            host = request.get_host()
        except DisallowedHost:  # already answered with 400: nothing to connect to
            return ["'self'"]
        if request.is_secure():
            return ["'self'", f"wss://{host}"]
        return ["'self'", f"ws://{host}", f"wss://{host}"]
