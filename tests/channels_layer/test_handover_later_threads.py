"""``handover.later`` is one for the process: two threads (two event loops) that start a
fan-out at once must not both take it, or one thread's handler has its first frame kept
for later and its next written at once, ahead of it (rev10)."""

import asyncio
import inspect
import sys
import threading

from channels_layer import handover
from consumers.send_deadline import SendDeadline

WAIT = 2.0


class _Receiver:
    def __init__(self, handle) -> None:
        self.handle = handle

    def release(self) -> None:
        pass


class _Ready:
    def __init__(self, handle) -> None:
        self.eager = _Receiver(handle)

    def wake(self) -> None:
        pass


def _hand_over(*handles) -> None:
    eager: list = []
    for handle in handles:
        eager += ["channel", _Ready(handle), b"payload", None]
    handover.hand_over(eager, lambda channel, payload, receipt: {"type": "m"}, False)


def _line_taking_later() -> int:
    lines, first = inspect.getsourcelines(handover.hand_over)
    return first + next(i for i, line in enumerate(lines) if "later = mine = (" in line)


def test_two_threads_starting_a_fan_out_at_once_keep_each_connections_order():
    paused, b_may_take, b_has_taken = (threading.Event() for _ in range(3))
    line = _line_taking_later()

    def pause_before_taking(frame, event, arg):
        if event == "line" and frame.f_lineno == line:
            paused.set()  # B found ``later`` free (or took it): now A starts its fan-out
            b_may_take.wait(WAIT)
        return pause_before_taking

    def b_trace(frame, event, arg):
        if event == "call" and frame.f_code is handover.hand_over.__code__:
            return pause_before_taking
        return None

    def b() -> None:
        sys.settrace(b_trace)
        try:
            _hand_over(lambda message: b_has_taken.set() or False, lambda message: False)
        finally:
            sys.settrace(None)

    written: list[str] = []

    async def a() -> None:
        async def send(message):
            written.append(message["text"])

        deadline = SendDeadline(send, {"type": "websocket"}, 10)

        def handle(message):
            deadline({"type": "websocket.send", "text": "first"})
            b_may_take.set()
            b_has_taken.wait(WAIT)
            deadline({"type": "websocket.send", "text": "second"})
            return False

        _hand_over(handle, lambda message: False)

    thread_b = threading.Thread(target=b)
    thread_b.start()
    assert paused.wait(WAIT)
    thread_a = threading.Thread(target=asyncio.run, args=(a(),))
    thread_a.start()
    thread_a.join(WAIT * 3)
    thread_b.join(WAIT * 3)
    assert written == ["first", "second"]
    assert handover.later is None
