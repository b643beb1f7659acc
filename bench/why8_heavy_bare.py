"""why8: the bare ASGI app in a process that has also loaded everything ours loads (Django set
up, the consumers and the routes built), so that only the per-frame code differs from ours."""

import bench.apps.ours  # noqa: F401  Django, consumers, channels_layer, the routes
from bench.apps.bare import application  # noqa: F401
