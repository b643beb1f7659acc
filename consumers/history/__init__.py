"""Group history for consumers: resume a group where the client left off, miss nothing.

With history turned on for a group in the layer config (``"history": {"chat.room.*":
{"size": 500, "ttl": 600}}``), every message sent to it gets a position (an epoch and an
offset). A consumer joins such a group "from position P of epoch E" and gets every message
after P, in order, then the live ones, each once; when P is no longer kept (or the epoch
changed) it is told, reloads its state another way, and is subscribed live anyway::

    class Room(ResumableJsonMixin, AsyncJsonWebsocketConsumer):
        async def connect(self):
            await self.accept()
            await self.history_join("chat.room.1", self.client_position("chat.room.1"))

        async def chat_message(self, event):
            await self.send_json(event)  # keeps its __position__ for the client

        async def recovery_failed(self, group, current):
            await super().recovery_failed(group, current)
            ...  # send the state from the database

- ``HistoryMixin`` / ``SyncHistoryMixin``: any async / sync consumer (mixin.py).
- ``ResumableJsonMixin`` / ``SyncResumableJsonMixin``: JSON WebSocket consumers that speak
  the protocol of ``consumers/static/consumers/socket.js`` (protocol.py).
- Consumers of one process recovering the same group share its reads, and
  ``SharedReads`` lets them share a reload of the same state too (reads.py).
"""

from channels_layer.history import HistoryLost, Position
from consumers.history.mixin import POSITION, HistoryMixin, SyncHistoryMixin, position_of
from consumers.history.protocol import (
    ResumableJsonMixin,
    SyncResumableJsonMixin,
    requested_positions,
)
from consumers.history.reads import SharedReads

__all__ = [
    "POSITION",
    "HistoryLost",
    "HistoryMixin",
    "Position",
    "ResumableJsonMixin",
    "SharedReads",
    "SyncHistoryMixin",
    "SyncResumableJsonMixin",
    "position_of",
    "requested_positions",
]
