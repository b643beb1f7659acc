"""Django settings shared by every Django-based benchmark app: no database, no middleware
that needs one, DEBUG off. The channel layer comes from the environment (see ``layers``)."""

from __future__ import annotations

import os

SECRET_KEY = "bench-only-not-secret"  # noqa: S105  benchmark apps only: no users, no sessions
DEBUG = False
ALLOWED_HOSTS = ["*"]
DATABASES: dict[str, dict[str, str]] = {}
ROOT_URLCONF = "bench.apps.urls"
USE_TZ = True
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}


def layers(memory_backend: str, redis_backend: str) -> dict[str, dict[str, object]]:
    """``BENCH_LAYER=memory`` (default) or ``redis`` (with ``BENCH_REDIS_URL`` and
    ``BENCH_PREFIX``): the same layer settings for every implementation."""
    if os.environ.get("BENCH_LAYER", "memory") == "redis":
        config: dict[str, object] = {
            "hosts": [os.environ["BENCH_REDIS_URL"]],
            "prefix": os.environ["BENCH_PREFIX"],
        }
        if os.environ.get("BENCH_REDIS_CLUSTER") == "1":  # bench.cluster: ours only
            config["cluster"] = True
        return {"default": {"BACKEND": redis_backend, "CONFIG": config}}
    return {"default": {"BACKEND": memory_backend}}
