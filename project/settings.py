"""Settings for the reference project: production settings unless told otherwise.

- ``DJANGO_DEBUG=1`` turns DEBUG on (a developer's machine: runserver, the README's quick
  start); anything else, or nothing, is production: DEBUG off, and then the project refuses
  to start without a strong ``DJANGO_SECRET_KEY`` (see project/security.py).
- ``DJANGO_HTTPS=0`` says the site is reached over plain HTTP (compose on localhost, the
  test suite): no HTTPS redirect, no ``Secure`` cookies, no HSTS. Unset, the production
  settings assume TLS ends at the proxy in front, which sets ``X-Forwarded-Proto``.

The environment chooses the services, so one image runs anywhere:
- ``DATABASE_URL``: SQLite in the project directory by default, or e.g.
  ``postgres://user:password@host:5432/name``.
- ``REDIS_URL``: without it the in-memory layer (one process, nothing to install); with
  ``redis://...`` the Redis layer, so several server and worker processes share groups.
  ``REDIS_PREFIX`` keeps several deployments apart on one Redis. Redis also keeps the
  chat's rate limits and socket counts, so they hold across processes.
- ``REDIS_CLUSTER=1``: that Redis is a Redis Cluster, and ``REDIS_URL`` the URL of one of
  its nodes or of several separated by commas (seeds, tried in order; the first one's
  password and TLS apply to all). The layer and the chat's limits then use cluster clients.
  A switch of its own rather than a URL scheme: a Cluster node's URL is an ordinary
  ``redis://`` URL (the one redis-cli takes), and several URLs without the switch would
  read as client-side sharding, which the project does not do.
- ``REDIS_RETRY_TIMEOUT`` (seconds, default 5): how long a layer call waits for Redis to
  come back before it fails; on a Cluster, above its failover time.

Neither URL is kept in a setting of its own, and ``SettingsFilter`` hides the ones that hold
them, so the debug page and error reports never print their passwords.
"""

import os
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.security import require_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = require_secret_key(os.environ.get("DJANGO_SECRET_KEY"), DEBUG)
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
    # Outside the others, so that every response gets it, error pages included.
    "project.security.ContentSecurityPolicyMiddleware",
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

# Lower-case names: module variables that are not settings, so no error page lists them.
database_url = os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
redis_url = os.environ.get("REDIS_URL")
cluster_switch = os.environ.get("REDIS_CLUSTER", "")
if cluster_switch not in ("", "0", "1"):
    raise ImproperlyConfigured(f"REDIS_CLUSTER must be 1 or 0, not {cluster_switch!r}")
redis_cluster = cluster_switch == "1"
# The layer's hosts: a Cluster's seed nodes, or one server's URL taken whole, as always.
redis_hosts = [redis_url] if redis_url else []
if redis_cluster:
    redis_hosts = [url.strip() for url in (redis_url or "").split(",") if url.strip()]
    if not redis_hosts:
        raise ImproperlyConfigured("REDIS_CLUSTER=1 needs REDIS_URL: a Cluster node's URL")
# How long a layer call waits for Redis to come back before it raises: above a Cluster's
# failover time (its cluster-node-timeout plus a few seconds; deploy/CLUSTER.md).
retry_timeout = os.environ.get("REDIS_RETRY_TIMEOUT", "5")
try:
    redis_retry_timeout = float(retry_timeout)
except ValueError:
    redis_retry_timeout = -1.0
if not 0 < redis_retry_timeout < 3600:
    raise ImproperlyConfigured(
        f"REDIS_RETRY_TIMEOUT must be seconds, more than 0 and under 3600, not {retry_timeout!r}"
    )
# A server database: pool threads keep their connection for a minute (checked before
# reuse) instead of opening one per job, which halved the moderation worker's verdict time.
# SQLite opens a file, as cheap as keeping it.
persistent = not database_url.startswith("sqlite")
DATABASES = {
    "default": dj_database_url.parse(
        database_url, conn_max_age=60 if persistent else 0, conn_health_checks=persistent
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file (not memory) so that a live Daphne process started by a test sees the test
    # data; the process id keeps parallel runs apart.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"consumers-test-{os.getpid()}.db")
    }

# A consumer's channel (``specific.*``) holds what reaches it while the consumer is busy
# with its own work, and drops the room's broadcasts beyond that. A chat socket that posts
# is busy for a few round trips per post (limits, save, broadcast, moderation job), each
# slower on a loaded server, and may have several posts queued (a burst of 10 frames, or
# what piled up while Redis was away): 500 is ten seconds of a room carrying 50
# broadcasts a second (a post is two: the message, then its verdict). The Redis outage
# drill measured up to 130 queued for a poster. Named channels (the moderation worker's)
# keep the default 100: there a full channel is backpressure for the sender.
consumer_channel_capacity = 500
consumer_channels = {"specific.*": consumer_channel_capacity}
# Each chat room's group keeps its last 500 messages for 10 minutes, so a page that
# reconnects gets what it missed (consumers/history); typing notices have a group of their own.
history = {"chat.room.*": {"size": 500, "ttl": 600}}
if redis_url:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_layer.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": redis_hosts,
                "cluster": redis_cluster,
                "retry_timeout": redis_retry_timeout,
                "prefix": os.environ.get("REDIS_PREFIX", "asgi"),
                "channel_capacity": consumer_channels,
                "history": history,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_layer.memory.InMemoryChannelLayer",
            "CONFIG": {"channel_capacity": consumer_channels, "history": history},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
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
# HTTPS only, in production: plain HTTP is redirected, cookies never travel without TLS,
# and browsers are told to use HTTPS for a year (HSTS).
https = not DEBUG and os.environ.get("DJANGO_HTTPS", "1") != "0"
SECURE_SSL_REDIRECT = SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = https
SECURE_HSTS_SECONDS = 365 * 24 * 3600 if https else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = https
# The debug page and error e-mails: also hide the settings that hold Redis URLs.
DEFAULT_EXCEPTION_REPORTER_FILTER = "project.security.SettingsFilter"

# The chat (see chat/conf.py for every setting and its default). The server's name is only
# shown when set: the host name is nobody's business but the operator's.
CHAT_SERVER_NAME = os.environ.get("SERVER_NAME", "")
CHAT_PRESENCE_INTERVAL = float(os.environ.get("CHAT_PRESENCE_INTERVAL", "15"))
# Limits shared by every process through Redis (without it, kept in this process). Their
# keys are named alike on one server and on a Cluster (one key per script: one slot).
CHAT_LIMITS_REDIS_URL = redis_hosts if redis_cluster else redis_url
CHAT_LIMITS_REDIS_CLUSTER = redis_cluster
CHAT_LIMITS_PREFIX = os.environ.get("REDIS_PREFIX", "asgi") + ":limits"
# A load test from one machine raises these (0: no cap).
for name, kind in (
    ("CHAT_MESSAGES_PER_SECOND", float),
    ("CHAT_MESSAGE_BURST", int),
    ("CHAT_MAX_SOCKETS_PER_USER", int),
    ("CHAT_MAX_SOCKETS_PER_ADDRESS", int),
):
    if name in os.environ:
        globals()[name] = kind(os.environ[name])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Metrics (README, Metrics): /metrics answers these networks (comma-separated CIDR; the
# address Daphne reports, so keep Daphne's own port private), a bearer token and staff.
# METRICS_PORT: runworker serves its metrics there (0: not at all).
METRICS_ALLOWED_NETWORKS = os.environ.get("METRICS_ALLOWED_NETWORKS", "127.0.0.1/32,::1/128").split(
    ","
)
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
CONSUMERS_METRICS_PORT = int(os.environ.get("METRICS_PORT", "0"))
CONSUMERS_METRICS_ADDRESS = os.environ.get("METRICS_ADDRESS", "127.0.0.1")

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
