"""Group history: which groups keep their last messages, and where a message stands in them.

A group whose name matches a pattern of the layer's ``history`` option keeps its last
``size`` messages for ``ttl`` seconds. Each ``group_send`` to it takes the next offset
(1, 2, 3...) of the group's current epoch, and every copy delivered carries it in
``message["__position__"]``. The epoch changes whenever the history was lost (the
in-memory layer restarted, Redis emptied or its keys evicted), so a position taken before
is never mistaken for one of now: a consumer that reconnects asks
``group_history(group, since)`` for what it missed and gets either every message after
``since``, in order, or ``HistoryLost``. Both layers apply the rules below identically.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

POSITION_KEY = "__position__"
# Groups whose rule lookup is remembered; beyond that the cache starts over.
_RULE_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Position:
    """Where a group's history stands: ``offset`` counts the messages sent in ``epoch``."""

    epoch: str  # changes whenever the group's history was lost
    offset: int  # +1 per group_send to the group; the first message is 1, none yet is 0


class HistoryLost(Exception):
    """``group_history`` cannot give every message after ``since``: the epoch changed, or
    some of them are no longer kept. ``current`` is where the group stands now."""

    def __init__(self, group: str, since: Position, current: Position, reason: str) -> None:
        super().__init__(
            f"The history of group {group!r} after offset {since.offset} of epoch "
            f"{since.epoch!r} is lost: {reason}"
        )
        self.group = group
        self.since = since
        self.current = current
        self.reason = reason


@dataclass(frozen=True)
class HistoryRule:
    """How much of a group's history is kept."""

    size: int  # messages
    ttl: float  # seconds after it was sent


class HistoryConfig:
    """The layer's ``history`` option: ``{group pattern: {"size": n, "ttl": seconds}}``,
    fnmatch-style patterns (or compiled regexes), the first match wins."""

    def __init__(self, config: Mapping[Any, Any] | None) -> None:
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ValueError(
                "history must be a dict of {group pattern: {'size': messages, 'ttl': "
                f"seconds}}; got {type(config).__name__}"
            )
        self.rules = [
            (_compile(pattern), _rule(pattern, value)) for pattern, value in config.items()
        ]
        self._cache: dict[str, HistoryRule | None] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def longest_ttl(self) -> float:
        """The longest ``ttl`` of any rule (0 if none): what a stored message may reach."""
        return max((rule.ttl for _, rule in self.rules), default=0.0)

    def rule(self, group: str) -> HistoryRule | None:
        """The rule of ``group``, or None if it keeps no history."""
        if not self.rules:
            return None
        try:
            return self._cache[group]
        except KeyError:
            pass
        found = next((rule for regex, rule in self.rules if regex.match(group)), None)
        with self._lock:
            if len(self._cache) >= _RULE_CACHE_SIZE:
                self._cache.clear()
            self._cache[group] = found
        return found

    def require(self, group: str) -> HistoryRule:
        """The rule of ``group``; ``ValueError`` if it keeps no history."""
        rule = self.rule(group)
        if rule is None:
            raise ValueError(
                f"Group {group!r} keeps no history: no pattern of the layer's 'history' "
                "option matches it"
            )
        return rule


def require_position(since: Any) -> Position:
    """``since`` if it is a ``Position`` (or the ``__position__`` dict of a message)."""
    if isinstance(since, Mapping) and {"epoch", "offset"} <= since.keys():
        since = Position(since["epoch"], since["offset"])
    if (
        not isinstance(since, Position)
        or not isinstance(since.epoch, str)
        or isinstance(since.offset, bool)
        or not isinstance(since.offset, int)
        or since.offset < 0
    ):
        raise ValueError(f"since must be a Position(epoch: str, offset: int >= 0); got {since!r}")
    return since


def require_limit(limit: Any) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or a positive int; got {limit!r}")
    return limit


def check_kept(
    group: str,
    since: Position,
    current: Position,
    first_kept: int | None,
    after: int | None = None,
) -> None:
    """Raise ``HistoryLost`` unless every message after ``since`` (or after offset
    ``after`` of its epoch, for a read under way) is still kept.

    ``first_kept``: the offset of the oldest message kept (None: none is)."""
    after = since.offset if after is None else after
    if since.epoch != current.epoch:
        raise HistoryLost(group, since, current, f"the group is now in epoch {current.epoch!r}")
    if after > current.offset:
        raise HistoryLost(
            group, since, current, f"the group's last offset is {current.offset}, before it"
        )
    if after < current.offset and (first_kept is None or first_kept > after + 1):
        oldest = "none is" if first_kept is None else f"the oldest kept is {first_kept}"
        raise HistoryLost(
            group, since, current, f"messages after it were trimmed by size or age ({oldest})"
        )


def position_of(group: str, position: Position) -> dict[str, Any]:
    """What ``message["__position__"]`` holds for a message at ``position`` of ``group``."""
    return {"group": group, "epoch": position.epoch, "offset": position.offset}


class Stamp(NamedTuple):
    """A message's place in its group's history, carried beside its payload where the
    payload was encoded before the offset was known (the Redis layers)."""

    group: str
    epoch: str
    offset: int

    def add_to(self, message: dict[str, Any]) -> dict[str, Any]:
        message[POSITION_KEY] = {"group": self.group, "epoch": self.epoch, "offset": self.offset}
        return message


def _compile(pattern: Any) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(
            f"history: a group pattern must be a non-empty str (fnmatch-style, such as "
            f"'chat.*') or a compiled regex; got {pattern!r}"
        )
    return re.compile(fnmatch.translate(pattern))


def _rule(pattern: Any, value: Any) -> HistoryRule:
    where = f"history[{pattern!r}]"
    if not isinstance(value, Mapping) or set(value) != {"size", "ttl"}:
        raise ValueError(
            f"{where} must be a dict with exactly the keys 'size' (messages kept) and "
            f"'ttl' (seconds kept); got {value!r}"
        )
    size, ttl = value["size"], value["ttl"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{where}['size'] must be a positive int (messages); got {size!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < float("inf"):
        raise ValueError(f"{where}['ttl'] must be a positive number of seconds; got {ttl!r}")
    return HistoryRule(size, float(ttl))
