"""A live view of the processes of a site, for people: ``manage.py consumers_top URL ...``.

Each process is scraped at its own ``/metrics`` (see ``consumers.metrics``); two scrapes
``interval`` seconds apart give the rates. One line per process: open connections, groups,
frames in and out per second, layer sends per second, messages waiting and the deepest
queue (the slowest consumer's backlog), sync threads busy, the handlers' p99 over the
interval, drops per second and unreachable Redis hosts.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

COLUMNS = (
    ("process", 24),
    ("conns", 7),
    ("groups", 7),
    ("in/s", 8),
    ("out/s", 8),
    ("sends/s", 8),
    ("queued", 7),
    ("deepest", 8),
    ("sync busy", 10),
    ("p99 ms", 8),
    ("drops/s", 8),
    ("redis", 6),
)


@dataclass
class Snapshot:
    """One scrape: sample values by name, summed over labels, and the handler buckets."""

    at: float
    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    error: str = ""

    def __getitem__(self, name: str) -> float:
        return self.values.get(name, 0.0)


def metrics_url(target: str) -> str:
    """``host:port`` or an http(s) URL; ``/metrics`` is added when no path is given."""
    url = target if "://" in target else f"http://{target}"
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https"):
        raise ValueError(f"{target!r}: give host:port or an http(s):// URL")
    return url if "/" in rest else f"{url}/metrics"


def scrape(url: str, token: str = "", timeout: float = 5.0) -> Snapshot:
    snapshot = Snapshot(time.monotonic())
    request = urllib.request.Request(url)  # noqa: S310 - http(s) only (metrics_url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            text = response.read().decode()
    except OSError as error:
        snapshot.error = str(getattr(error, "reason", error))
        return snapshot
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "consumers_handler_seconds_bucket":
                snapshot.buckets[float(sample.labels["le"])] += sample.value
            snapshot.values[sample.name] += sample.value
            if "direction" in sample.labels:
                key = f'{sample.name}{{direction="{sample.labels["direction"]}"}}'
                snapshot.values[key] += sample.value
    return snapshot


def p99(before: Snapshot, after: Snapshot) -> float | None:
    """The upper bound of the bucket holding the handlers' 99th percentile, in seconds."""
    count = after["consumers_handler_seconds_count"] - before["consumers_handler_seconds_count"]
    if count <= 0:
        return None
    for bound in sorted(after.buckets):
        if after.buckets[bound] - before.buckets.get(bound, 0.0) >= 0.99 * count:
            return bound
    return math.inf


def row(name: str, before: Snapshot, after: Snapshot) -> list[str]:
    if after.error:
        return [name, f"unreachable: {after.error}"]
    seconds = max(after.at - before.at, 1e-9)

    def rate(metric: str) -> str:
        if before.error or not before.values:
            return "-"
        return f"{(after[metric] - before[metric]) / seconds:.1f}"

    percentile = p99(before, after) if not before.error else None
    return [
        name,
        f"{after['consumers_websocket_connections']:.0f}",
        f"{after['consumers_layer_groups']:.0f}",
        rate('consumers_websocket_frames_total{direction="in"}'),
        rate('consumers_websocket_frames_total{direction="out"}'),
        rate("consumers_layer_call_seconds_count"),
        f"{after['consumers_layer_queued_messages']:.0f}",
        f"{after['consumers_layer_queue_depth_max']:.0f}",
        f"{after['consumers_sync_threads_busy']:.0f}/{after['consumers_sync_threads_max']:.0f}",
        "-" if percentile is None else f"<={percentile * 1000:g}",
        rate("consumers_layer_messages_dropped_total"),
        "down" if after["consumers_redis_hosts_unreachable"] else "ok",
    ]


def render(rows: Sequence[list[str]]) -> str:
    lines = ["".join(title.ljust(width) for title, width in COLUMNS).rstrip()]
    for cells in rows:
        if len(cells) == 2:  # a process that did not answer
            lines.append(cells[0].ljust(COLUMNS[0][1]) + cells[1])
            continue
        lines.append("".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip())
    return "\n".join(lines)


def watch(
    targets: Sequence[str],
    interval: float,
    show: Callable[[str], None],
    token: str = "",
    rounds: int | None = None,
) -> None:
    """Scrape every target each ``interval`` seconds and ``show`` the table; ``rounds``
    tables, or until interrupted."""
    urls = [metrics_url(target) for target in targets]
    before = [scrape(url, token) for url in urls]
    shown = 0
    while rounds is None or shown < rounds:
        time.sleep(interval)
        after = [scrape(url, token) for url in urls]
        show(render([row(t, b, a) for t, b, a in zip(targets, before, after, strict=True)]))
        before = after
        shown += 1
