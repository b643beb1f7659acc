"""The consumer metrics read from live objects when Prometheus scrapes (sync pool threads,
presence), and the HTTP server for processes without one of their own. Nothing here runs on
a frame's way; ``consumers.metrics``' collector yields these after the WebSocket tallies."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from channels_layer.metrics import enabled

logger = logging.getLogger("consumers.metrics")

_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_trackers: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_pool(pool: Any) -> None:
    """Report a ``threads.SyncPool``'s threads at each scrape."""
    _pools.add(pool)


def watch_presence(tracker: Any) -> None:
    """Report a ``presence_tracker.Tracker``'s figures at each scrape."""
    _trackers.add(tracker)


def pool_metrics() -> Iterator[Metric]:
    """The sync pools' threads, busy and waiting calls, as they are now."""
    threads = busy = queued = size = 0
    for pool in list(_pools):
        # SyncPool's counts, read under its lock (consumers.threads).
        with pool._lock:
            threads += pool._threads
            busy += pool._threads - pool._idle
            queued += max(0, pool._queued - pool._idle)
        size += pool.size
    yield GaugeMetricFamily("consumers_sync_threads", "Sync pool threads started", value=threads)
    yield GaugeMetricFamily(
        "consumers_sync_threads_busy", "Sync pool threads running a call", value=busy
    )
    yield GaugeMetricFamily(
        "consumers_sync_threads_max", "Sync pool size (CONSUMERS_SYNC_THREADS)", value=size
    )
    yield GaugeMetricFamily(
        "consumers_sync_calls_waiting", "Sync calls waiting for a pool thread", value=queued
    )


def presence_metrics() -> Iterator[Metric]:
    """The presence trackers' topics, entries and peers, as they are now."""
    trackers = [t for t in list(_trackers) if not t.retired and not t.task.done()]
    yield GaugeMetricFamily(
        "consumers_presence_topics",
        "Presence topics tracked in this process",
        value=len(trackers),
    )
    yield GaugeMetricFamily(
        "consumers_presence_local_entries",
        "Presence entries (connections) this process tracks",
        value=sum(len(refs) for tracker in trackers for refs in dict(tracker.local).values()),
    )
    yield GaugeMetricFamily(
        "consumers_presence_peers",
        "Other processes' trackers heard from, summed over topics",
        value=sum(len(tracker.peers) for tracker in trackers),
    )


def serve_from_thread() -> None:
    """Serve the metrics over HTTP from a thread on ``CONSUMERS_METRICS_PORT`` (unset or
    0: not at all) at ``CONSUMERS_METRICS_ADDRESS`` (default 127.0.0.1), for processes
    without an HTTP server of their own, such as ``runworker``."""
    from django.conf import settings

    port = int(getattr(settings, "CONSUMERS_METRICS_PORT", 0) or 0)
    if port and enabled():
        address = getattr(settings, "CONSUMERS_METRICS_ADDRESS", "127.0.0.1")
        start_http_server(port, address)
        logger.info("Metrics at http://%s:%d/metrics", address, port)
