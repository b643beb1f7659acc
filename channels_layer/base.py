"""The channel layer contract, written once so every backend enforces identical rules.

Backends (in-memory here, Redis later) inherit name validation, capacity lookup, expiry
settings and the msgpack wire format, so a project that works on one backend does not
break on another.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import msgpack

from . import message_checks
from .exceptions import MessageTooLarge
from .history import Position
from .message_checks import describe, is_flat_and_plain, type_name

T = TypeVar("T")

logger = logging.getLogger("channels_layer")

MAX_NAME_LENGTH = 100
# The channel layer spec: "Messages over 1MB in size" need not be supported.
MAX_MESSAGE_SIZE = 1024 * 1024

Message = dict[str, Any]
CapacityPattern = str | re.Pattern[str]

# Optional capabilities ------------------------------------------------------------------
#
# Channels' spec names two optional capabilities in ``extensions``: "groups" (group_add,
# group_discard, group_send) and "flush". Ours adds these; a layer lists the ones it has,
# and the methods below keep safe defaults for layers that do not:
#
# - WHEN_READY: ``when_ready(channel)``, a future resolved once ``receive`` would return at
#   once. Called by ``consumers.consumer`` so an idle consumer parks no ``receive()`` task.
# - AT_LEAST_ONCE: ``lease_timeout(channel)`` and ``receive_leased(channel)``, which returns a
#   ``Lease``. Called by ``consumers.worker`` (``runworker``) for the channels configured so.
# - CROSS_PROCESS: other processes reach this layer's channels and groups (Redis), unlike
#   the in-memory layer. Read by ``runworker`` (it warns without it) and by the chat (which
#   reviews posts in the web process without it): ask the layer, not its class.
WHEN_READY = "when_ready"
AT_LEAST_ONCE = "at_least_once"
CROSS_PROCESS = "cross_process"

# Group history (issue 16) ----------------------------------------------------------------
#
# - HISTORY: groups matching the layer's ``history`` option keep their last messages
#   (``channels_layer.history``): ``group_send`` returns the message's ``Position`` (None
#   for other groups), ``group_position(group)`` and ``group_history(group, since, limit)``.
#   Called by ``consumers`` to recover what a reconnecting client missed.
HISTORY = "history"


class Lease(Protocol):
    """A message held by one worker until its job ends (the AT_LEAST_ONCE capability)."""

    async def finish(self) -> None:
        """The job is done: the message is gone for good."""
        ...

    async def give_back(self) -> None:
        """The job did not run: another worker may take the message now."""
        ...

    def abandon(self) -> None:
        """Let go as if the holder had died: the message returns when the lease runs out."""
        ...


_GROUP_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
# A process-local channel adds "!" plus a suffix the owning process chose.
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.\-]+(?:![A-Za-z0-9_.\-]*)?")
_ALLOWED = "ASCII letters, digits, hyphens, underscores or periods"


def _is_valid(name: Any, pattern: re.Pattern[str], max_length: int) -> bool:
    if not isinstance(name, str) or len(name) > max_length:
        return False
    if pattern is _GROUP_NAME:
        known = _VALID_GROUPS
    elif pattern is _CHANNEL_NAME:
        known = _VALID_CHANNELS
    else:
        return pattern.fullmatch(name) is not None
    if name in known:
        return True
    if pattern.fullmatch(name) is None:
        return False
    _remember_valid(known, name)
    return True


def _remember_valid(known: set[str], name: str) -> None:
    if len(known) >= VALID_NAMES_KEPT:
        known.clear()  # the names in use now come back at their next check
    known.add(name)


# Names that matched ``_GROUP_NAME`` or ``_CHANNEL_NAME`` lately, and the channels this
# process named: a connection's group and channel are checked at each group_add,
# group_discard and receive, and a set lookup costs a tenth of the match. Bounded (cleared
# when full); a set's operations are atomic, so threads may share them.
VALID_NAMES_KEPT = 4096
_VALID_GROUPS: set[str] = set()
_VALID_CHANNELS: set[str] = set()


def _random_hex() -> str:
    """16 random hex digits from ``os.urandom``, as ``secrets.token_hex(8)`` gives, drawn from
    a batch: one system call per ``HEX_BATCH`` channel names instead of one each."""
    try:
        return _hex_batch.pop()  # atomic: two threads never get the same digits
    except IndexError:
        digits = os.urandom(8 * HEX_BATCH).hex()
        _hex_batch.extend(digits[i : i + 16] for i in range(16, len(digits), 16))
        return digits[:16]


HEX_BATCH = 256
_hex_batch: list[str] = []
# A forked child must not name channels with its parent's digits.
os.register_at_fork(after_in_child=_hex_batch.clear)


class SkippedMembers:
    """Counts broadcasts a full member channel missed and says so at most once every
    ``every`` seconds, with the count: a consumer that stopped keeping up is worth one
    warning, not one line per message (nor silence)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._count = 0
        self._since = time.monotonic() - every

    def skipped(self, group: str, channel: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._since >= self.every:
            logger.warning(
                "group_send skipped %d full member channel(s) in %.0f s (last: %r in group "
                "%r): their consumers are not keeping up with their capacity",
                self._count,
                now - self._since,
                channel,
                group,
            )
            self._count, self._since = 0, now


class BaseChannelLayer:
    """Shared rules of a channel layer; subclasses supply the storage and delivery.

    ``expiry``: seconds a message waits in a channel before it is dropped undelivered.
    ``group_expiry``: seconds a group membership lasts unless ``group_add`` renews it.
    ``capacity``: messages a channel holds before ``send`` raises ``ChannelFull``.
    ``channel_capacity``: per-channel overrides, ``{pattern: capacity}``, where a pattern
    is a glob string (``"http.response!*"``) or a compiled regex; the first match wins.
    ``max_message_size``: bytes a message may take msgpack-encoded; ``send`` and
    ``group_send`` raise ``MessageTooLarge`` for a larger one and send it to no one.
    """

    MAX_NAME_LENGTH: ClassVar[int] = MAX_NAME_LENGTH
    extensions: ClassVar[list[str]] = []
    # Whether require_valid_message may pass a flat message in one loop: not for a class
    # with its own require_message_shape, which must see every message.
    _own_shape_check: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        shape = cls.require_message_shape
        cls._own_shape_check = shape is not BaseChannelLayer.require_message_shape

    def __init__(
        self,
        *,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[CapacityPattern, int] | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.expiry = self._require_seconds(expiry, "expiry")
        self.group_expiry = self._require_seconds(group_expiry, "group_expiry")
        self.capacity = self._require_capacity(capacity, "capacity")
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.max_message_size = self._require_capacity(max_message_size, "max_message_size (bytes)")
        self.skipped_members = SkippedMembers()

    # Names ------------------------------------------------------------------

    # Channels' name for the message of a bad name, with "{}" for "Channel" or "Group";
    # a subclass may override it to reword the errors.
    invalid_name_error: ClassVar[str] = (
        "{} name must be a str of at most " + str(MAX_NAME_LENGTH) + " " + _ALLOWED
    )

    def require_valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        """Return True, or raise ``TypeError`` unless ``name`` may be used as a channel name.

        ``receive=True`` is for backends that receive a process-local channel by its
        shared prefix: such a name must then end at the ``!``.
        """
        self._require_name(
            name, _CHANNEL_NAME, "Channel", " (plus '!suffix' for a process-local channel)"
        )
        if receive and "!" in name and not name.endswith("!"):
            raise TypeError(
                "A process-local channel name given to receive must end at the '!' "
                f"(e.g. 'specific.abc!'); got {name!r}"
            )
        return True

    def require_valid_group_name(self, name: Any) -> bool:
        """Return True, or raise ``TypeError`` unless ``name`` may be a group name (no ``!``)."""
        self._require_name(name, _GROUP_NAME, "Group")
        return True

    def valid_channel_name(self, name: Any, receive: bool = False) -> bool:
        """Deprecated (as in Channels): use ``require_valid_channel_name``."""
        warnings.warn(
            "valid_channel_name is deprecated, use require_valid_channel_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_channel_name(name, receive)

    def valid_group_name(self, name: Any) -> bool:
        """Deprecated (as in Channels): use ``require_valid_group_name``."""
        warnings.warn(
            "valid_group_name is deprecated, use require_valid_group_name instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.require_valid_group_name(name)

    def require_valid_prefix(self, prefix: Any, room: int) -> None:
        """Check a ``new_channel`` prefix, leaving ``room`` characters for what the backend
        appends, so the error names the caller's prefix rather than the generated name."""
        limit = self.MAX_NAME_LENGTH - room
        if not _is_valid(prefix, _GROUP_NAME, limit):
            raise TypeError(
                f"A new_channel prefix must be a str of at most {limit} {_ALLOWED}; "
                f"got {describe(prefix)}"
            )

    def _new_channel_name(self, prefix: str, owner: str) -> str:
        """``{prefix}.{owner}!{random}``: the shape of every process-local channel name."""
        suffix = f".{owner}!{_random_hex()}"
        self.require_valid_prefix(prefix, room=len(suffix))
        name = prefix + suffix
        if _is_valid(owner, _GROUP_NAME, self.MAX_NAME_LENGTH):  # so the name is valid too
            _remember_valid(_VALID_CHANNELS, name)
        return name

    def _require_name(
        self, name: Any, pattern: re.Pattern[str], what: str, extra: str = ""
    ) -> None:
        if not _is_valid(name, pattern, self.MAX_NAME_LENGTH):
            raise TypeError(f"{self.invalid_name_error.format(what)}{extra}; got {describe(name)}")

    # Capacity ---------------------------------------------------------------

    def compile_capacities(
        self, channel_capacity: Mapping[CapacityPattern, int]
    ) -> list[tuple[re.Pattern[str], int]]:
        """Turn ``{glob or regex: capacity}`` into ``[(regex, capacity)]``, keeping order."""
        return self.compile_patterns(channel_capacity, "channel_capacity", self._require_capacity)

    @staticmethod
    def compile_patterns(
        patterns: Mapping[CapacityPattern, Any], option: str, check: Callable[[Any, str], T]
    ) -> list[tuple[re.Pattern[str], T]]:
        """Turn ``{glob or regex: value}`` into ``[(regex, checked value)]``, keeping order."""
        compiled = []
        for pattern, value in patterns.items():
            what = f"{option}[{pattern!r}]"
            if not isinstance(pattern, re.Pattern):
                pattern = re.compile(fnmatch.translate(pattern))
            compiled.append((pattern, check(value, what)))
        return compiled

    def get_capacity(self, channel: str) -> int:
        """The first matching ``channel_capacity`` pattern's capacity, else ``capacity``."""
        for regex, capacity in self.channel_capacity:
            if regex.match(channel):
                return capacity
        return self.capacity

    @staticmethod
    def _require_capacity(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TypeError(f"{what} must be a positive int; got {value!r}")
        return value

    @staticmethod
    def _require_seconds(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise TypeError(f"{what} must be a positive number of seconds; got {value!r}")
        return float(value)

    def lease_timeout(self, channel: str) -> float | None:
        """The visibility timeout if ``channel`` is delivered at least once (a backend
        option, see ``RedisChannelLayer``); None: at most once, as the spec says."""
        return None

    async def receive_leased(self, channel: str) -> tuple[Message, Lease]:
        """The next message of an at-least-once channel and its lease (backends that
        offer them); see ``RedisChannelLayer``."""
        raise ValueError(f"{type(self).__name__} has no at_least_once channels")

    # Messages ---------------------------------------------------------------

    def require_message_shape(self, message: Any) -> None:
        """Raise unless ``message`` is a dict with a str ``"type"``."""
        if not isinstance(message, dict):
            raise TypeError(f"A message must be a dict; got {type(message).__name__}")
        if "type" not in message:
            raise ValueError(f"A message needs a 'type' key; got keys {sorted(map(str, message))}")
        if not isinstance(message["type"], str):
            raise ValueError(f"message['type'] must be a str; got {describe(message['type'])}")

    def require_valid_message(self, message: Any) -> None:
        """Raise unless ``message`` is a dict with a str ``"type"`` that msgpack can carry."""
        if not self._own_shape_check and is_flat_and_plain(message):
            return  # the usual message, checked in one loop; anything else in full below
        self.require_message_shape(message)
        try:
            message_checks.require_encodable(message, "message")
        except RecursionError:
            raise ValueError("The message is nested too deeply to encode") from None

    def serialize(self, message: Message) -> bytes:
        """Validate and msgpack-encode ``message`` (never pickle: layer data crosses processes).

        Every backend's ``send`` and ``group_send`` encode through here (or through the
        Redis layers' ``serializer_format``), once, before delivering to anyone, so the
        size limit is checked on the bytes actually sent.
        """
        self.require_valid_message(message)
        return self.check_size(message, msgpack.packb(message, use_bin_type=True))

    def check_size(self, message: Message, data: bytes) -> bytes:
        """``data``, the encoded ``message``; ``MessageTooLarge`` if over the limit."""
        if len(data) > self.max_message_size:
            raise MessageTooLarge(
                f"The {message['type'][:100]!r} message is {len(data)} bytes encoded, "
                f"over the limit of {self.max_message_size} bytes; it was not sent. Raise the "
                "layer's max_message_size option to allow larger messages."
            )
        return data

    def deserialize(self, data: bytes) -> Message:
        """Decode ``serialize`` output; str and bytes keep their types, tuples become lists.

        Only msgpack is read (never pickle): anything else raises ``ValueError``.
        """
        try:
            message = msgpack.unpackb(data, raw=False)
        except ValueError as error:
            raise ValueError(f"Not a msgpack-encoded message: {error}") from None
        if not isinstance(message, dict):
            raise ValueError(
                f"Not a message: msgpack decoded {type_name(message)}, expected a dict"
            )
        return message

    # The API every backend provides -------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        """Queue ``message`` on ``channel``; raise ``ChannelFull`` at capacity."""
        raise NotImplementedError

    async def receive(self, channel: str) -> Message:
        """Wait for and return the next unexpired message on ``channel``."""
        raise NotImplementedError

    async def when_ready(self, channel: str) -> asyncio.Future[None] | None:
        """A future resolved once ``receive(channel)`` would return at once, for a
        process-local channel of a backend that can tell (None otherwise). Consumers wait
        with it while idle instead of parking a ``receive()`` task."""
        return None

    async def new_channel(self, prefix: str = "specific") -> str:
        """Return a fresh process-local channel name that only this process receives on."""
        raise NotImplementedError

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew its membership); the "groups" extension."""
        raise NotImplementedError

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; not an error if it is not a member."""
        raise NotImplementedError

    async def group_send(self, group: str, message: Message) -> Position | None:
        """Send ``message`` to every current member, silently skipping full channels; a
        group with history (the HISTORY capability) returns the message's position."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Drop every message and group membership; the "flush" extension."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections or other resources the layer holds."""
