"""Channel layers that only tests use."""

from channels_layer.base import CROSS_PROCESS
from channels_layer.memory import InMemoryChannelLayer


class DeclaredCrossProcessLayer(InMemoryChannelLayer):
    """The in-memory layer declaring that other processes reach it: code that must know
    whether they do asks the layer's ``extensions``, so this one counts as reachable."""

    extensions = [*InMemoryChannelLayer.extensions, CROSS_PROCESS]
