"""Settings for the reference project.

The environment chooses the services, so one image runs anywhere:
- ``DATABASE_URL``: SQLite in the project directory by default, or e.g.
  ``postgres://user:password@host:5432/name``.
- ``REDIS_URL``: without it the in-memory layer (one process, nothing to install); with
  ``redis://...`` the Redis layer, so several server and worker processes share groups.
  ``REDIS_PREFIX`` keeps several deployments apart on one Redis.
"""

import os
import socket
import tempfile
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "consumers",
    "project",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "project.asgi.application"

DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# A server database: pool threads keep their connection for a minute (checked before
# reuse) instead of opening one per job, which halved the moderation worker's verdict time.
# SQLite opens a file, as cheap as keeping it.
_persistent = not DATABASE_URL.startswith("sqlite")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=60 if _persistent else 0,
        conn_health_checks=_persistent,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file (not memory) so that a live Daphne process started by a test sees the test
    # data; the process id keeps parallel runs apart.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"consumers-test-{os.getpid()}.db")
    }

if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_layer.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ["REDIS_URL"]],
                "prefix": os.environ.get("REDIS_PREFIX", "asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_layer.memory.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic puts the files nginx serves in production.
STATIC_ROOT = os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:lobby"
LOGOUT_REDIRECT_URL = "chat:lobby"
# Behind nginx: trust its X-Forwarded-Proto, so HTTPS is seen as HTTPS.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = [
    origin for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if origin
]

# The chat (see chat/conf.py for every setting and its default).
CHAT_SERVER_NAME = os.environ.get("SERVER_NAME", socket.gethostname())
CHAT_PRESENCE_INTERVAL = float(os.environ.get("CHAT_PRESENCE_INTERVAL", "15"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"timed": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "timed"}},
    # One handler, on the root logger, which Daphne configures too: every line once.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        **{
            name: {"level": "INFO"}
            for name in ("consumers", "channels_layer", "project", "chat", "daphne")
        },
    },
}
