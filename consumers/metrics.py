"""Prometheus metrics of the consumer side of a process: WebSockets, handlers, the sync pool,
workers and presence (the layer's own are in ``channels_layer.metrics``).

What changes on every frame is counted in plain integers on the event loop, the only place
ASGI ``receive`` and ``send`` run, and handed to ``prometheus_client`` as counters when it
scrapes: a frame costs an attribute increment, not a lock. Histograms are
``channels_layer.timings`` (bucket counts, lock-free for the thread that observes first,
exported as histograms), the rarer counters ``prometheus_client``'s, all bound to their
labels once. State (open connections; threads busy and presence, in ``metrics_state``) is
read at scrape time. Labels are bounded: a consumer class, a close code the server sent or
a standard one, a refusal reason; never a user, room or channel name.
``CONSUMERS_METRICS = False`` (read once) makes every hook a no-op.

How a WebSocket is seen: the outermost ``ProtocolTypeRouter`` watches its ASGI messages
(``watching``, a ``WebSocketWatch``; ``serve`` for other callers); the origin check, the router and
``DenyConnection`` name the reason when a handshake is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from channels_layer.metrics import enabled
from channels_layer.timings import TimingsFamily
from consumers.exceptions import ClientGone, StopConsumer
from consumers.metrics_state import pool_metrics, presence_metrics
from consumers.metrics_state import serve_from_thread as serve_from_thread
from consumers.metrics_state import watch_pool as watch_pool
from consumers.metrics_state import watch_presence as watch_presence
from consumers.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("consumers.metrics")

REFUSAL_REASONS = ("origin", "route", "auth", "application")
# Close codes labelled as themselves when a client sends them; any other code a client
# chooses is "other" (the server's own codes come from code, so they stay few).
STANDARD_CLOSE_CODES = frozenset(range(1000, 1016))

HANDLER_SECONDS = TimingsFamily(
    "consumers_handler_seconds",
    "Time a consumer's handler took for one message (sync: on its pool thread)",
    ["consumer"],
)
HANDLER_ERRORS = Counter(
    "consumers_handler_errors", "Handlers that raised (the connection or job failed)", ["consumer"]
)
QUEUE_WAIT_SECONDS = TimingsFamily(
    "consumers_sync_queue_wait_seconds", "Time a sync call waited for a pool thread"
)
_queue_waited = QUEUE_WAIT_SECONDS.labels().observe
WORKER_JOBS = Counter(
    "consumers_worker_jobs",
    "Worker messages: handled (done), raised (failed), handed back for another try "
    "(redelivered: at_least_once channels)",
    ["outcome"],
)
_jobs_done, _jobs_failed, _jobs_redelivered = (
    WORKER_JOBS.labels(outcome) for outcome in ("done", "failed", "redelivered")
)


class Tally:
    """The WebSocket counts, kept by the event loop."""

    def __init__(self) -> None:
        self.open = self.accepted = self.slow_dropped = 0
        self.frames_in = self.frames_out = self.bytes_in = self.bytes_out = 0
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self.closes: dict[str, int] = {}


tally = Tally()
_watch: ContextVar[WebSocketWatch | None] = ContextVar("consumers_websocket_watch", default=None)


def _size(message: Message) -> int:
    text = message.get("text")
    if text is None:
        return len(message.get("bytes") or b"")
    # isascii() reads a flag: no encoding for the usual ASCII frame.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class WebSocketWatch:
    """Counts one connection's frames, bytes, handshake outcome and close."""

    __slots__ = ("_receive", "_send", "accepted", "close_sent", "ended", "refusal")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.accepted = self.ended = False
        self.refusal = "application"
        self.close_sent: int | None = None

    async def receive(self) -> Message:
        message = await self._receive()
        self.received(message)
        return message

    def received(self, message: Message) -> None:
        """Count a message the server's ``receive`` gave."""
        kind = message.get("type")
        if kind == "websocket.receive":
            tally.frames_in += 1
            text = message.get("text")  # _size(message), without its call
            if text is not None and text.isascii():
                tally.bytes_in += len(text)
            else:
                tally.bytes_in += _size(message)
        elif kind == "websocket.disconnect":
            self.end(message.get("code", 1005))

    async def send(self, message: Message) -> None:
        await self._send(message)
        self.sent(message)

    def sent(self, message: Message) -> None:
        """Count a message the server's ``send`` took (``send_deadline.SendDeadline`` counts
        an ASCII text frame in place, as this does)."""
        kind = message.get("type")
        if kind == "websocket.send":
            tally.frames_out += 1
            text = message.get("text")  # _size(message), without its call
            if text is not None and text.isascii():
                tally.bytes_out += len(text)
            else:
                tally.bytes_out += _size(message)
        elif kind == "websocket.accept" and not self.accepted:
            self.accepted = True
            tally.accepted += 1
            tally.open += 1
        elif kind == "websocket.close" and self.close_sent is None:
            self.close_sent = message.get("code") or 1000
            if not self.accepted:
                tally.refused[self.refusal] += 1

    def end(self, code: int) -> None:
        """The connection is over (its disconnect, or its application returned)."""
        if self.ended or not self.accepted:
            self.ended = True
            return
        self.ended = True
        tally.open -= 1
        if self.close_sent is not None:
            label = str(self.close_sent)
        else:
            label = str(code) if code in STANDARD_CLOSE_CODES else "other"
        tally.closes[label] = tally.closes.get(label, 0) + 1


def unwatched(call: Callable[..., Any]) -> tuple[Callable[..., Any], WebSocketWatch | None]:
    """For a watch's ``receive`` or ``send``: the server's own, and the watch, whose count
    (``received``, ``sent``) to run after each message; for any other callable, itself and
    None. A consumer that counts itself saves the watch's coroutine on every message, and a
    level the task goes through at each wake-up; keeping the watch rather than its bound
    method saves an object per connection."""
    watch = getattr(call, "__self__", None)
    if type(watch) is WebSocketWatch:
        function = getattr(call, "__func__", None)
        if function is WebSocketWatch.receive:
            return watch._receive, watch
        if function is WebSocketWatch.send:
            return watch._send, watch
    return call, None


def watching(scope: Scope, receive: Receive, send: Send) -> WebSocketWatch | None:
    """A watch for this task's connection if it is a WebSocket (None if not, or with metrics
    off): pass the application its ``receive`` and ``send``, and call its ``end(1006)`` when
    the application returns. For a caller that runs the application in its own frame."""
    if scope["type"] != "websocket" or not enabled():
        return None
    watch = WebSocketWatch(receive, send)
    _watch.set(watch)
    return watch


async def serve(application: ASGIApp, scope: Scope, receive: Receive, send: Send) -> Any:
    """Run ``application``, watching the connection if it is a WebSocket."""
    watch = watching(scope, receive, send)
    if watch is None:
        return await application(scope, receive, send)
    try:
        return await application(scope, watch.receive, watch.send)
    finally:
        watch.end(1006)


def refusing(reason: str) -> None:
    """The handshake of this task's WebSocket is being refused for ``reason``."""
    watch = _watch.get()
    if watch is not None:
        watch.refusal = reason


def refused_route() -> None:
    """No route matched a WebSocket (the router answers it past the watch)."""
    if enabled():
        tally.refused["route"] += 1


def slow_client_dropped() -> None:
    """A client that stopped reading was closed (called on the event loop)."""
    if enabled():
        tally.slow_dropped += 1


# What ``_Handling.ended`` is given the start of a handler call by.
clock = time.perf_counter


class _Handling:
    """Times a consumer class's handler calls; counts failures, and a worker's job outcomes.
    One per class and kind of scope (WebSocket or HTTP, or a worker's ``channel``), shared
    by its consumers: a connection makes none (one each was an object, a weak-dict lookup
    and a caught ``AttributeError`` per connect)."""

    __slots__ = ("errors", "job", "observe")

    def __init__(self, cls: type, job: bool) -> None:
        bound = _by_class.get(cls) or _bind(cls)
        self.observe, self.errors = bound
        self.job = job

    def __enter__(self) -> None:
        # Shared, so the start is kept per context: per thread (sync handlers of one class
        # run at once) and per task (async handlers interleave on one thread).
        _starts.set((*_starts.get(), time.perf_counter()))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        *outer, started = _starts.get()
        _starts.set(tuple(outer))
        self.ended(started, kind)

    def ended(self, started: float, kind: type[BaseException] | None = None) -> None:
        """A handler call that began at ``started`` (``clock()``) is over, ``kind`` what it
        raised: ``with`` without its two calls, for the hot paths (a broadcast's members).
        A frame's hot path that ended without an error and is not a ``job`` calls
        ``observe(clock() - started)`` itself, which is all this does then."""
        self.observe(clock() - started)
        if kind is not None or self.job:  # not a WebSocket frame handled normally
            self._count(kind)

    def _count(self, kind: type[BaseException] | None) -> None:
        failed = kind is not None and not issubclass(kind, _NOT_FAILURES)
        if failed:
            self.errors()
        # A job cancelled part-way (its worker stopping) is neither done nor failed: an
        # at-least-once job is counted as redelivered and runs again elsewhere.
        if self.job and (kind is None or not issubclass(kind, asyncio.CancelledError)):
            (_jobs_failed if failed else _jobs_done).inc()


# The start of each ``with handling(...)`` block open in this context, innermost last: a
# thread's or a task's own (a per-thread stack mixed up interleaved tasks' starts).
_starts: ContextVar[tuple[float, ...]] = ContextVar("consumers_handler_starts", default=())


class _NotMeasured:
    # What the hot paths read of a timer instead of calling ``ended``: no job, no count.
    job = False

    @staticmethod
    def observe(seconds: float) -> None:
        pass

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        pass

    def ended(self, started: float, kind: type[BaseException] | None = None) -> None:
        pass


# Weak: a consumer class (one made in a test, say) must not outlive its use because of us.
_by_class: weakref.WeakKeyDictionary[type, tuple[Callable[[float], None], Callable[[], None]]]
_by_class = weakref.WeakKeyDictionary()
_not_measured = _NotMeasured()
# How handlers end a connection or a job normally.
_NOT_FAILURES = (StopConsumer, ClientGone, asyncio.CancelledError)


def _bind(cls: type) -> tuple[Callable[[float], None], Callable[[], None]]:
    name = f"{cls.__module__}.{cls.__qualname__}"
    bound = _by_class[cls] = (HANDLER_SECONDS.labels(name).observe, HANDLER_ERRORS.labels(name).inc)
    return bound


def handling(consumer: Any) -> _Handling | _NotMeasured:
    """``with handling(consumer):`` around one handler call. What it gives is kept on the
    consumer (``CONSUMERS_METRICS`` is read once), so a frame asks nothing else."""
    timer = getattr(consumer, "_consumers_handling", None)
    if timer is None:
        timer = _timer_for(consumer)
        if consumer is not None:
            consumer._consumers_handling = timer
    return timer


def _timer_for(consumer: Any) -> _Handling | _NotMeasured:
    """The class's shared timer for the consumer's kind of scope, made at its first use."""
    if not enabled():
        return _not_measured
    cls = type(consumer)
    scope = getattr(consumer, "scope", None)
    job = scope is not None and scope.get("type") == "channel"
    timers: tuple[_Handling, _Handling] | None = cls.__dict__.get("_consumers_timers")
    if timers is None:
        # On the class, not in a dict of ours: it goes when the class does.
        timers = (_Handling(cls, False), _Handling(cls, True))
        # A built-in type (a handler without a consumer) takes none: made at each call.
        with contextlib.suppress(TypeError):
            setattr(cls, "_consumers_timers", timers)  # noqa: B010  a name mypy does not know
    return timers[job]


def job_redelivered() -> None:
    if enabled():
        _jobs_redelivered.inc()


def queued_at() -> float:
    """When a sync call was queued (``queue_waited`` takes it back on the thread)."""
    return time.perf_counter()


def queue_waited(queued: float) -> None:
    if enabled():
        _queue_waited(time.perf_counter() - queued)


class ConsumersCollector:
    """The tallies, and the state of the pool and presence, as they are at the scrape."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "consumers_websocket_connections", "Open WebSocket connections", value=tally.open
        )
        yield CounterMetricFamily(
            "consumers_websocket_accepted", "WebSocket handshakes accepted", value=tally.accepted
        )
        refused = CounterMetricFamily(
            "consumers_websocket_refused",
            "WebSocket handshakes refused, by reason (origin, route, auth, application)",
            labels=["reason"],
        )
        for reason, count in tally.refused.items():
            refused.add_metric([reason], count)
        yield refused
        for name, what, values in (
            ("frames", "WebSocket frames", (tally.frames_in, tally.frames_out)),
            ("bytes", "WebSocket payload bytes", (tally.bytes_in, tally.bytes_out)),
        ):
            family = CounterMetricFamily(
                f"consumers_websocket_{name}",
                f"{what} received (in) and sent (out)",
                labels=["direction"],
            )
            family.add_metric(["in"], values[0])
            family.add_metric(["out"], values[1])
            yield family
        closes = CounterMetricFamily(
            "consumers_websocket_closes",
            "Accepted WebSockets ended, by the code the server sent, else the client's",
            labels=["code"],
        )
        for code, count in sorted(dict(tally.closes).items()):
            closes.add_metric([code], count)
        yield closes
        yield CounterMetricFamily(
            "consumers_websocket_slow_clients_dropped",
            "Clients closed because they stopped reading",
            value=tally.slow_dropped,
        )
        yield from pool_metrics()
        yield from presence_metrics()


REGISTRY.register(ConsumersCollector())
