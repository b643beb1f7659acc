"""Settings of the metrics tests' Daphne (tests/e2e/metrics_app.py): the project's, with a
small unsent-bytes bound and a small channel capacity, so slow clients and full channels
are quick to provoke."""

from tests.settings import *  # noqa: F403
from tests.settings import CHANNEL_LAYERS

CONSUMERS_WEBSOCKET_MAX_BUFFER = 256 * 1024
config = CHANNEL_LAYERS["default"].setdefault("CONFIG", {})
config["capacity"] = 5
config.pop("channel_capacity", None)  # the project gives consumer channels room for bursts
