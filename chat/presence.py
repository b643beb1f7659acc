"""Who is in a room right now, correct across any number of server processes.

Each process keeps one ``RoomPresence`` per room it has people in, counting its own
connections by user name. Whenever that list changes, and every ``interval`` seconds as a
heartbeat, it publishes the list to the room's group, tagged with its own id. Browsers merge
the lists of all processes and drop one whose heartbeat is overdue, so the people of a
process that died leave the list by themselves. A process that joins a room asks the others
to publish at once, so a newcomer sees everyone immediately.

One publish per process per change crosses the network (bursts of joins coalesce into one),
not one per connection: the cost grows with the number of processes, not with members².
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from channels_layer import BaseChannelLayer

logger = logging.getLogger(__name__)

_rooms: dict[tuple[asyncio.AbstractEventLoop, str], RoomPresence] = {}


async def join(layer: BaseChannelLayer, group: str, user: str, interval: float) -> None:
    """Count one more connection of ``user`` in the room whose group is ``group``."""
    key = (asyncio.get_running_loop(), group)
    room = _rooms.get(key)
    if room is None:
        room = _rooms[key] = RoomPresence(layer, group, interval)
    room.add(user)


async def leave(group: str, user: str) -> None:
    """Count one connection of ``user`` fewer; the last one out stops the room's publisher."""
    key = (asyncio.get_running_loop(), group)
    room = _rooms.get(key)
    if room is not None and room.remove(user):
        del _rooms[key]


class RoomPresence:
    """This process's members of one room, published to the room's group."""

    def __init__(self, layer: BaseChannelLayer, group: str, interval: float) -> None:
        self.layer = layer
        self.group = group
        self.interval = interval
        self.members: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def asks(self) -> str:
        """The group where processes ask each other to publish."""
        return f"{self.group}.presence"

    def add(self, user: str) -> None:
        self.members[user] += 1
        self._changed.set()

    def remove(self, user: str) -> bool:
        """Returns True when the room has no members left in this process."""
        self.members[user] -= 1
        if self.members[user] <= 0:
            del self.members[user]
        self._changed.set()
        return not self.members

    async def _run(self) -> None:
        while True:
            try:
                return await self._serve()
            except Exception as error:  # a layer outage: the layer logs it, we start over
                logger.debug("Presence for %s stopped (%r); restarting", self.group, error)
                await asyncio.sleep(self.interval)

    async def _serve(self) -> None:
        source = await self.layer.new_channel("presence")
        listener = asyncio.create_task(self._answer_asks(source))
        try:
            await self.layer.group_add(self.asks, source)
            await self.layer.group_send(self.asks, {"type": "presence.ask", "source": source})
            while True:
                self._changed.clear()
                members = sorted(self.members)
                await self._publish(source, members)
                if not members:  # the last one left: the empty list told everyone
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await self._changed.wait()
        finally:
            listener.cancel()
            with contextlib.suppress(Exception):
                await self.layer.group_discard(self.asks, source)

    async def _answer_asks(self, source: str) -> None:
        while True:
            try:
                message = await self.layer.receive(source)
            except Exception:  # an outage: the heartbeat carries on meanwhile
                await asyncio.sleep(self.interval)
                continue
            if message.get("source") != source:
                self._changed.set()

    async def _publish(self, source: str, members: list[str]) -> None:
        await self.layer.group_send(
            self.group,
            {
                "type": "presence.sync",
                "source": source,
                "members": members,
                # Three missed heartbeats and a list is stale.
                "ttl": self.interval * 3,
            },
        )
