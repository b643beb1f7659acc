"""A project as a Channels user has it after swapping imports: ``"consumers"`` is not in
INSTALLED_APPS (the README once said it was only needed for ``runworker``)."""

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_layer.memory.InMemoryChannelLayer"}}
CONSUMERS_WEBSOCKET_MAX_BUFFER = 256 * 1024
CONSUMERS_WEBSOCKET_SEND_TIMEOUT = 5
