"""Prometheus metrics of the channel layer, per process (``prometheus_client``'s registry).

Bounded labels only: ``backend`` (``memory`` or ``redis``, the pub/sub layer included),
``call`` and ``reason``; never a channel or group name. Histograms (``timings``) and
counters are bound to their labels once, when a layer module is imported; state (messages
waiting, groups, Redis hosts unreachable) is read when Prometheus scrapes, so the layer
pays nothing for it between scrapes. ``CONSUMERS_METRICS = False`` in the settings (read
once, at the first use) turns the hooks into no-ops. README's Metrics section lists every
metric.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .timings import TimingsCollector, TimingsFamily

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")

_enabled: bool | None = None


def enabled() -> bool:
    """``settings.CONSUMERS_METRICS`` (default True), read once; True without settings."""
    global _enabled
    if _enabled is None:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        try:
            _enabled = bool(getattr(settings, "CONSUMERS_METRICS", True))
        except ImproperlyConfigured:
            _enabled = True
    return _enabled


CALL_SECONDS = TimingsFamily(
    "consumers_layer_call_seconds",
    "Time a send or group_send call took, from the call to its return",
    ["backend", "call"],
)
RECEIVE_SECONDS = TimingsFamily(
    "consumers_layer_receive_seconds",
    "Time from a send (in any process) to the message reaching this process (Redis layers)",
    ["backend"],
)
DROPPED = Counter(
    "consumers_layer_messages_dropped",
    "Messages dropped: a full channel (capacity) or older than the layer's expiry",
    ["backend", "reason"],
)


def timed(backend: str, call: str) -> Callable[[Callable[Concatenate[S, P], Awaitable[R]]], Any]:
    """Decorate a layer method: its duration goes to ``consumers_layer_call_seconds``."""
    observe = CALL_SECONDS.labels(backend, call).observe

    def decorate(method: Callable[Concatenate[S, P], Awaitable[R]]) -> Any:
        @functools.wraps(method)
        async def timed_call(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
            if not enabled():
                return await method(self, *args, **kwargs)
            started = time.perf_counter()
            try:
                return await method(self, *args, **kwargs)
            finally:
                observe(time.perf_counter() - started)

        return timed_call

    return decorate


def _dropping(backend: str, reason: str) -> Callable[[], None]:
    child = DROPPED.labels(backend, reason)
    return lambda: child.inc() if enabled() else None


#: Call once per message a layer drops, by backend and reason.
dropped_full = {name: _dropping(name, "capacity") for name in ("memory", "redis")}
dropped_expired = {name: _dropping(name, "expiry") for name in ("memory", "redis")}
_received = {name: RECEIVE_SECONDS.labels(name).observe for name in ("memory", "redis")}


def received(backend: str, sent_at: float) -> None:
    """A message sent at ``sent_at`` (``time.time()`` of its sender) reached this process."""
    if enabled():
        _received[backend](max(0.0, time.time() - sent_at))


def counting_expiries(
    backend: str, on_discard: Callable[[str, Any], None] | None = None
) -> Callable[[str, Any], None]:
    """A mailbox ``on_discard`` that counts each message left unread (expired, or removed
    by ``flush()``) before calling ``on_discard``."""
    count = dropped_expired[backend]

    def discarded(channel: str, receipt: Any) -> None:
        count()
        if on_discard is not None:
            on_discard(channel, receipt)

    return discarded


# State read at scrape time --------------------------------------------------------------

_watched: dict[int, tuple[str, weakref.ref[Any], weakref.ref[Any]]] = {}
_hosts: weakref.WeakSet[Any] = weakref.WeakSet()
_outages = {"ended": 0, "seconds": 0.0}
_lock = threading.Lock()


def watch_layer(backend: str, mailboxes: Any, groups: Any) -> None:
    """Report this layer's queues (``mailbox.Mailboxes``) and local groups
    (``mailbox.GroupMembers``) at each scrape, for as long as they live."""
    key = id(mailboxes)
    forget = lambda _: _watched.pop(key, None)  # noqa: E731
    _watched[key] = (backend, weakref.ref(mailboxes, forget), weakref.ref(groups, forget))


def watch_redis_host(health: Any) -> None:
    """Report a Redis host's reachability (``redis_health.Health``) at each scrape."""
    _hosts.add(health)


def redis_back(seconds_down: float) -> None:
    """A Redis host answered again after ``seconds_down`` seconds unreachable."""
    with _lock:
        _outages["ended"] += 1
        _outages["seconds"] += seconds_down


class LayerCollector:
    """Queues, groups and Redis reachability, as they are when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            "consumers_layer_queued_messages",
            "Messages waiting in this process's channel queues",
            labels=["backend"],
        )
        deepest = GaugeMetricFamily(
            "consumers_layer_queue_depth_max",
            "Messages waiting in this process's fullest channel queue",
            labels=["backend"],
        )
        groups = GaugeMetricFamily(
            "consumers_layer_groups", "Groups with members in this process", labels=["backend"]
        )
        totals: dict[str, list[int]] = {}
        for backend, mailboxes_ref, groups_ref in list(_watched.values()):
            mailboxes, members = mailboxes_ref(), groups_ref()
            if mailboxes is None or members is None:
                continue
            total = totals.setdefault(backend, [0, 0, 0])
            # The queues of mailbox.Mailboxes, read under its lock (same package).
            with mailboxes._lock:
                depths = [len(queue.messages) for queue in mailboxes._channels.values()]
            total[0] += sum(depths)
            total[1] = max([total[1], *depths])
            total[2] += len(members.groups())
        for backend, (waiting, deepest_queue, group_count) in sorted(totals.items()):
            queued.add_metric([backend], waiting)
            deepest.add_metric([backend], deepest_queue)
            groups.add_metric([backend], group_count)
        yield from (queued, deepest, groups)
        yield from self._redis()

    def _redis(self) -> Iterator[Metric]:
        now = time.monotonic()
        down = [now - host.down_since for host in list(_hosts) if host.down_since is not None]
        with _lock:
            ended, seconds = _outages["ended"], _outages["seconds"]
        yield GaugeMetricFamily(
            "consumers_redis_hosts_unreachable",
            "Redis hosts of this process's layers that are unreachable now",
            value=len(down),
        )
        yield CounterMetricFamily(
            "consumers_redis_reconnects",
            "Times a Redis host became reachable again after an outage",
            value=ended,
        )
        yield CounterMetricFamily(
            "consumers_redis_unavailable_seconds",
            "Seconds Redis hosts were unreachable, the current outages included",
            value=seconds + sum(down),
        )


REGISTRY.register(LayerCollector())
REGISTRY.register(TimingsCollector())
