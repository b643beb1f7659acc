"""Nothing installed but what Django itself needs: no ``consumers``, no ``daphne``."""

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
CHANNEL_LAYERS = {"default": {"BACKEND": "channels_layer.memory.InMemoryChannelLayer"}}
CONSUMERS_WEBSOCKET_MAX_BUFFER = 256 * 1024
CONSUMERS_WEBSOCKET_SEND_TIMEOUT = 5
