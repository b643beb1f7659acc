"""Histograms cheap enough to observe on every message, exported by ``prometheus_client``.

``prometheus_client.Histogram.observe`` takes a lock for its sum and another for the
bucket and checks its state first: about 1 us here, which on every frame of an echo was
most of what the metrics cost. A ``Timings`` keeps one bucket list and a sum under one
uncontended lock; ``TimingsCollector`` hands them to ``prometheus_client`` as ordinary
histograms when Prometheus scrapes (same names, ``_bucket``/``_count``/``_sum`` samples).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily, Metric

# From 100 us (an in-memory send) to 10 s (a Redis outage being retried).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

_FIRST_BOUND = LATENCY_BUCKETS[0]


class Timings:
    """One histogram's counts by bucket (the last one: over every bound) and its sum."""

    __slots__ = ("_lock", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        # The first bound >= seconds: most handlers and sends take less than the first.
        index = 0 if seconds <= _FIRST_BOUND else bisect_left(LATENCY_BUCKETS, seconds)
        lock = self._lock
        lock.acquire()  # not ``with``: its two lookups and calls were half of this method
        try:
            self.counts[index] += 1
            self.total += seconds
        finally:
            lock.release()

    def read(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self.counts), self.total


class TimingsFamily:
    """A histogram metric: its name, help and label names, and a ``Timings`` per labels."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], Timings] = {}
        self._lock = threading.Lock()
        families.append(self)

    def labels(self, *values: str) -> Timings:
        """The ``Timings`` of these label values, made on first use (bind it once)."""
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = Timings()
            return child

    def metric(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            counts, total = child.read()
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(values), buckets, total)
        return family


families: list[TimingsFamily] = []


class TimingsCollector:
    """Every ``TimingsFamily``, for ``prometheus_client``'s registry."""

    def collect(self) -> Iterator[Metric]:
        for family in list(families):
            yield family.metric()
