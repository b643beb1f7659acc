"""Builds one channel layer per alias in ``settings.CHANNEL_LAYERS``, on first use.

``settings.CHANNEL_LAYERS`` maps an alias to ``{"BACKEND": "dotted.path.Class",
"CONFIG": {keyword arguments for the class}}``.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .base import BaseChannelLayer
from .exceptions import InvalidChannelLayerError

DEFAULT_CHANNEL_LAYER = "default"


class ChannelLayerManager:
    """Lazily builds and caches the layer for each alias; ``channel_layers[alias]``."""

    def __init__(self) -> None:
        # Building a layer is guarded so two threads asking at once share one instance.
        self._lock = threading.Lock()
        # The layers built so far, by alias; Channels' name, which tests look at.
        self.backends: dict[str, BaseChannelLayer] = {}

    @property
    def configs(self) -> dict[str, Any]:
        """``settings.CHANNEL_LAYERS``, or ``{}`` when the setting is absent or empty."""
        return getattr(settings, "CHANNEL_LAYERS", None) or {}

    def __getitem__(self, alias: str) -> BaseChannelLayer:
        """The shared layer for ``alias``; ``KeyError`` if the alias is not configured."""
        with self._lock:
            if alias not in self.backends:
                self.backends[alias] = self.make_backend(alias)
            return self.backends[alias]

    def __contains__(self, alias: object) -> bool:
        return alias in self.configs

    def set(self, alias: str, layer: BaseChannelLayer) -> BaseChannelLayer | None:
        """Use ``layer`` for ``alias`` (a test swapping the backend) and return the layer
        it replaces, if one was built; as Channels' ``channel_layers.set``."""
        with self._lock:
            old = self.backends.get(alias)
            self.backends[alias] = layer
            return old

    def make_backend(self, alias: str) -> BaseChannelLayer:
        """Build a new, uncached layer for ``alias`` from its BACKEND and CONFIG."""
        return self._build(alias, "CONFIG")

    def make_test_backend(self, alias: str) -> BaseChannelLayer:
        """Build a new, uncached layer for ``alias`` from its BACKEND and TEST_CONFIG
        (``InvalidChannelLayerError`` if the alias has no TEST_CONFIG), as Channels does."""
        if "TEST_CONFIG" not in self._config(alias):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{alias!r}] has no TEST_CONFIG for make_test_backend()"
            )
        return self._build(alias, "TEST_CONFIG")

    def _config(self, alias: str) -> dict[str, Any]:
        try:
            config = self.configs[alias]
        except KeyError:
            raise KeyError(
                f"No channel layer {alias!r} in settings.CHANNEL_LAYERS "
                f"(configured: {sorted(self.configs)})"
            ) from None
        if not isinstance(config, dict):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{alias!r}] must be a dict; got {type(config).__name__}"
            )
        return config

    def _build(self, alias: str, config_key: str) -> BaseChannelLayer:
        config = self._config(alias)
        backend = config.get("BACKEND")
        if not isinstance(backend, str):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{alias!r}] needs 'BACKEND' set to a dotted class path; "
                f"got {backend!r}"
            )
        try:
            backend_class = import_string(backend)
        except ImportError as exc:
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{alias!r}] BACKEND {backend!r} cannot be imported: {exc}"
            ) from exc
        if not isinstance(backend_class, type):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{alias!r}] BACKEND {backend!r} is not a class; "
                f"it is {type(backend_class).__name__}"
            )
        try:
            layer: BaseChannelLayer = backend_class(**config.get(config_key, {}))
        except TypeError as exc:
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{alias!r}] {config_key} was rejected by BACKEND {backend!r}: {exc}"
            ) from exc
        return layer

    def reset(self) -> None:
        """Forget the cached layers so the next lookup rebuilds them from settings."""
        with self._lock:
            self.backends.clear()


channel_layers = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> BaseChannelLayer | None:
    """The layer for ``alias`` (configured, or given with ``channel_layers.set``), or None,
    so consumers can run without."""
    # A layer built (or set) already, the usual case: one dict lookup per connect, not the
    # settings, the lock and a second lookup (a dict's get is atomic: no lock needed).
    layer = channel_layers.backends.get(alias)
    if layer is not None:
        return layer
    if alias not in channel_layers.configs and alias not in channel_layers.backends:
        return None
    return channel_layers[alias]


def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHANNEL_LAYERS":
        channel_layers.reset()


# The same signal object as django.test.signals.setting_changed (fired by override_settings),
# imported from core so production code does not load the test framework.
setting_changed.connect(_reset_on_change)
