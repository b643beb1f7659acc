"""The queue between event loops and the sync pool's threads: calls in order, taken by as
few thread wake-ups as can be.

Waking a sleeping thread is what made the sync hop costly, more than the calls it ran: the
event loop's thread holds the GIL when it queues a call, so the woken thread ran only to
find the GIL taken and sleep again on it (two context switches for nothing, and the loop's
thread preempted while it held the GIL), then woke once more when the loop let the GIL go.
So here:

- A call goes to a thread that is awake if there is one: one woken and not running yet, or
  one spinning. Only when none is does ``put`` wake a sleeping thread (the last to sleep:
  its memory is warmest) or start one, up to the pool's size.
- A thread that ends a call takes the next one without sleeping, whichever connection it is
  for. With nothing queued, it spins (one thread at a time, while calls have been coming
  quickly): it yields the GIL and the core, so it runs again once the loop lets the GIL go,
  which is when the loop has queued what it had, and takes those calls with no wake-up at
  all. After ``SPIN_SECONDS`` without a call, or when calls come slowly, it sleeps.
- A thread that takes a call while more wait and no other thread is awake says so (``take``
  returns True): its caller asks the loop to run ``check``. The loop runs only while that
  thread does not hold the GIL, so if its call blocks (a slow query, a sleep) ``check``
  wakes another thread for the calls behind it; if the calls were quick, the same thread
  has taken them all by then and nobody was woken. A slow call so never holds up the calls
  queued behind it for longer than it takes the loop to notice.

Plain ``acquire``/``release`` rather than ``with``: ``with`` costs 0.2 us more on Python
3.11, on a path taken several times a call.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from _thread import LockType
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# A thread with nothing to do spins (yields the GIL and the core, then looks again) until a
# call comes, for at most SPIN_SECONDS, and stops sooner once FAST_YIELDS yields in a row
# came back within FAST_YIELD_SECONDS: then nothing else was running, so the loop is idle
# and spinning only burns CPU. After a spin that ended with no call, the next idle spells
# sleep at once, twice as many each time, up to MAX_SPIN_BACKOFF.
SPIN_SECONDS = 0.002
FAST_YIELDS = 32
FAST_YIELD_SECONDS = 0.000005
MAX_SPIN_BACKOFF = 64


def _yield_core() -> None:
    """Let the GIL go and give the core to any thread ready to run (the loop's)."""
    os.sched_yield()


if not hasattr(os, "sched_yield"):  # Windows: time.sleep(0) lets the GIL go too

    def _yield_core() -> None:
        time.sleep(0)


class PoolQueue(Generic[T]):
    """The calls queued for a pool of ``size`` threads, and the pool's idle threads.

    ``start(n)`` is called (without the lock) to start the pool's ``n``-th thread, which
    then calls ``take`` in a loop. ``lock``, ``threads`` and ``idle`` (threads not running
    a call) are read by the metrics.
    """

    def __init__(self, size: int, start: Callable[[int], None]) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.threads = 0
        self.idle = 0
        self._start = start
        self._calls: deque[T] = deque()
        self._sleeping: list[LockType] = []  # each held: its thread blocks on it
        self._awake = 0  # idle threads that will look at the calls without a wake-up
        self._spinning = False
        self._check_asked = False
        self._backoff = 1  # idle spells to sleep through after the next spin that fails
        self._skip = 0  # idle spells left to sleep through before spinning again

    def __len__(self) -> int:
        return len(self._calls)

    def put(self, call: T) -> None:
        """Queue a call; wake or start a thread only if none is awake."""
        lock = self.lock
        lock.acquire()
        try:
            self._calls.append(call)
            wake = self._wake()
        finally:
            lock.release()
        if wake is not None:
            self._act(wake)

    def check(self) -> None:
        """Wake or start a thread if calls wait and no thread is awake (see ``take``)."""
        lock = self.lock
        lock.acquire()
        try:
            self._check_asked = False
            wake = self._wake() if self._calls else None
        finally:
            lock.release()
        if wake is not None:
            self._act(wake)

    def take(self, parked: LockType, returning: bool) -> tuple[T, bool]:
        """The next call for this pool thread, waiting for one; and whether to have
        ``check`` run on the loop. ``parked``: this thread's own lock, held; ``returning``:
        the thread ran a call since its last ``take`` (a new thread is counted idle)."""
        lock, calls = self.lock, self._calls
        lock.acquire()
        if returning:
            self.idle += 1
            self._awake += 1
        spun = False
        while True:
            if calls:
                call = calls.popleft()
                self.idle -= 1
                self._awake -= 1
                ask = bool(calls) and not self._awake and not self._check_asked
                if ask:
                    self._check_asked = True
                lock.release()
                return call, ask
            if not spun and not self._spinning:
                spun = True  # once per idle spell
                if self._skip:
                    self._skip -= 1
                else:
                    self._spinning = True
                    lock.release()
                    came = _spin(calls)
                    lock.acquire()
                    self._spinning = False
                    if came:
                        self._backoff = 1
                    else:
                        self._skip = self._backoff
                        self._backoff = min(2 * self._backoff, MAX_SPIN_BACKOFF)
                    continue
            self._awake -= 1
            self._sleeping.append(parked)
            lock.release()
            parked.acquire()  # released by whoever woke it, who counted it awake
            lock.acquire()

    def _wake(self) -> LockType | int | None:
        """Under the lock: the sleeping thread to wake (or the number of the thread to
        start) for a queued call, if no idle thread is awake to take it."""
        if self._awake:
            return None
        if self._sleeping:
            self._awake += 1
            return self._sleeping.pop()
        if self.threads < self.size:
            self.threads += 1
            self.idle += 1
            self._awake += 1
            return self.threads
        return None

    def _act(self, wake: LockType | int) -> None:
        if not isinstance(wake, int):
            wake.release()
            return
        try:
            self._start(wake)
        except BaseException:  # no thread after all (RuntimeError: can't start one)
            self.lock.acquire()
            try:
                self.threads -= 1
                self.idle -= 1
                self._awake -= 1
            finally:
                self.lock.release()
            raise


def _spin(calls: deque[T]) -> bool:
    """Yield the GIL and the core until ``calls`` has one (True), or no longer (False).

    With the loop on the same core, a yield lets it run until it sleeps and lets the GIL go;
    on another core, this thread waits for the GIL the loop holds. Either way the next look
    at ``calls`` comes once the loop has queued what it had."""
    now = time.perf_counter()
    deadline = now + SPIN_SECONDS
    fast = 0
    while not calls:
        if now >= deadline or fast >= FAST_YIELDS:
            return False
        _yield_core()
        then, now = now, time.perf_counter()
        fast = fast + 1 if now - then < FAST_YIELD_SECONDS else 0
    return True


def wake_without_preempting() -> None:
    """Mark this thread so that waking it never preempts the thread running on its core
    (Linux's ``SCHED_BATCH``: the same share of the CPU at the same priority, but a woken
    thread waits for a free core, or for the running thread to sleep or use up its slice).

    A pool thread is woken by the event loop's thread, which holds the GIL. Preempted at
    once, the loop's thread went on holding the GIL while the woken one ran only to find
    it taken and sleep again: two context switches for nothing per wake-up (without them
    a sync echo costs a server pinned to one core about a tenth less CPU). Marked, the woken
    thread runs once the loop sleeps or lets the GIL go, as it had to anyway, and finds
    every call queued by then. The cost, why it is off unless ``CONSUMERS_SYNC_THREADS_BATCH``
    says so: on a core busy with another process's work, a woken thread (a handler whose
    database query came back, too) waits up to that process's slice, a few milliseconds,
    instead of preempting it (sync p99 of 31-54 ms in 3 of 5 rounds on a shared machine,
    against 12 ms at most), and threads a handler starts inherit the policy. Elsewhere
    (other systems, a sandbox that refuses the call) threads stay as they were.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
