"""Settings for ``bench.apps.django_only``: Django's ASGI handler with no consumer framework."""

from bench.apps.settings_common import *  # noqa: F403

INSTALLED_APPS: list[str] = []
