"""Presence: who is in a topic right now, in every process, told as join/leave diffs.

A consumer ``track``s a key (usually a user id) with metadata in a topic; the entry leaves
with ``untrack`` or by itself when the consumer ends (``PresenceMixin``). Listing gives one
entry per key with the metadata of each of its connections (``{"ada": {"metas": [{"ref":
..., ...}, ...]}}``, as Phoenix Presence). A consumer that ``subscribe``s gets
``presence.diff`` messages ``{"topic", "joins", "leaves"}`` (same shape) instead of full
lists, so a change costs one small message per subscriber whatever the topic's size. Refs
are unique, so a client merges diffs with ``apply_diff`` and applying one twice is harmless.

Across processes through the channel layer (consumers/presence_tracker.py): a process that
dies stops its heartbeat, and its members leave everyone's lists within
``CONSUMERS_PRESENCE_TIMEOUT`` (default three ``CONSUMERS_PRESENCE_INTERVAL``, which defaults
to 5 seconds) plus one interval.

    class RoomConsumer(PresenceMixin, AsyncJsonWebsocketConsumer):
        async def connect(self):
            await self.accept()
            await self.send_json({"members": await self.presence_subscribe("room.1")})
            await self.presence_track("room.1", self.scope["user"].pk, {"name": ...})

        async def presence_diff(self, event):
            await self.send_json(event)
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync

from channels_layer import BaseChannelLayer, get_channel_layer
from consumers.presence_tracker import DIFF, Members, Tracker, apply_diff, check_topic

__all__ = [
    "DIFF",
    "Members",
    "PresenceMixin",
    "SyncPresenceMixin",
    "Tracker",
    "apply_diff",
    "forget",
    "list_members",
    "subscribe",
    "track",
    "tracker_for",
    "untrack",
]

# This process's trackers, by event loop, layer and topic.
_trackers: dict[tuple[int, int, str], Tracker] = {}


def tracker_for(layer: BaseChannelLayer, topic: str, interval: float | None = None) -> Tracker:
    """This process's tracker of ``topic`` on ``layer``, started if there is none (with a
    heartbeat every ``interval`` seconds; default: ``CONSUMERS_PRESENCE_INTERVAL``)."""
    check_topic(topic)
    key = (id(asyncio.get_running_loop()), id(layer), topic)
    tracker = _trackers.get(key)
    if tracker is None:
        tracker = _trackers[key] = Tracker(layer, topic, interval=interval)
        tracker.on_stop = lambda stopped: _trackers.pop(key, None)
    return tracker


def _layer_of(consumer: Any) -> BaseChannelLayer:
    layer = getattr(consumer, "channel_layer", None)
    if layer is None or getattr(consumer, "channel_name", None) is None:
        raise ValueError(f"{type(consumer).__name__}: presence needs a channel layer")
    return layer


def _held(consumer: Any) -> list[tuple[Tracker, str, str]]:
    """The (tracker, key, ref) entries ``consumer`` tracks."""
    if "_presence_entries" not in vars(consumer):
        consumer._presence_entries = []
    return consumer._presence_entries


async def track(consumer: Any, topic: str, key: Any, meta: dict[str, Any] | None = None) -> str:
    """Track ``key`` (made a string) with ``meta`` in ``topic`` for this connection; the
    ref that names this connection's entry."""
    tracker = tracker_for(_layer_of(consumer), topic)
    key = str(key)
    ref = tracker.track(key, meta)
    _held(consumer).append((tracker, key, ref))
    return ref


async def untrack(consumer: Any, topic: str, key: Any = None) -> None:
    """Untrack this connection's entries in ``topic`` (only ``key``'s, if given)."""
    kept = []
    for tracker, held_key, ref in _held(consumer):
        if tracker.topic == topic and (key is None or str(key) == held_key):
            tracker.untrack(held_key, ref)
        else:
            kept.append((tracker, held_key, ref))
    consumer._presence_entries = kept


async def subscribe(consumer: Any, topic: str) -> Members:
    """Send ``presence.diff`` messages of ``topic`` to this consumer; the members now."""
    layer = _layer_of(consumer)
    tracker = tracker_for(layer, topic)
    tracker.subscribers.add(consumer.channel_name)
    if "_presence_topics" not in vars(consumer):
        consumer._presence_topics = []
    consumer._presence_topics.append(tracker)
    # Changes already in the listing are not sent again as diffs (but for a change made
    # while joining the group: it may come both ways, and applying it twice is harmless).
    await tracker.settled()
    await layer.group_add(tracker.local_group, consumer.channel_name)
    return tracker.members()


async def list_members(topic: str, alias: str = "default") -> Members:
    """The members of ``topic`` as this process knows them (it must track or subscribe
    to the topic to know the other processes' members)."""
    layer = get_channel_layer(alias)
    tracker = _trackers.get((id(asyncio.get_running_loop()), id(layer), check_topic(topic)))
    return tracker.members() if tracker is not None else {}


def forget(consumer: Any) -> None:
    """Untrack all of ``consumer``'s entries and end its subscriptions (synchronous, so
    it runs even while the consumer is being cancelled)."""
    for tracker, key, ref in vars(consumer).pop("_presence_entries", []):
        tracker.untrack(key, ref)
    for tracker in vars(consumer).pop("_presence_topics", []):
        tracker.unsubscribe(consumer.channel_name)


class PresenceMixin:
    """For any consumer: presence entries and subscriptions end when the consumer does.

    Async consumers call ``await self.presence_track(...)``; define ``presence_diff(self,
    event)`` to receive the diffs of subscribed topics.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            forget(self)

    async def presence_track(self, topic: str, key: Any, meta: dict[str, Any] | None = None) -> str:
        return await track(self, topic, key, meta)

    async def presence_untrack(self, topic: str, key: Any = None) -> None:
        await untrack(self, topic, key)

    async def presence_subscribe(self, topic: str) -> Members:
        return await subscribe(self, topic)

    async def presence_list(self, topic: str) -> Members:
        return await list_members(topic, getattr(self, "channel_layer_alias", "default"))


class SyncPresenceMixin(PresenceMixin):
    """The same for ``SyncConsumer`` and ``WebsocketConsumer``: plain methods."""

    def presence_track(  # type: ignore[override]
        self, topic: str, key: Any, meta: dict[str, Any] | None = None
    ) -> str:
        return async_to_sync(track)(self, topic, key, meta)

    def presence_untrack(self, topic: str, key: Any = None) -> None:  # type: ignore[override]
        async_to_sync(untrack)(self, topic, key)

    def presence_subscribe(self, topic: str) -> Members:  # type: ignore[override]
        return async_to_sync(subscribe)(self, topic)

    def presence_list(self, topic: str) -> Members:  # type: ignore[override]
        alias = getattr(self, "channel_layer_alias", "default")
        return async_to_sync(list_members)(topic, alias)
