"""Going on with an awaitable whose first step ran by hand, outside ``await``: a send that
usually ends in that step (``send_deadline``), a handler run in its sender's call
(``eager``). The rest then runs exactly as ``await`` would have run it."""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any

# An awaitable stepped by hand: a coroutine itself, or what any other's ``__await__`` gives.
Step = Coroutine[Any, Any, Any] | Generator[Any, Any, Any]


@types.coroutine
def resume(step: Step, suspended_on: Any) -> Generator[Any, Any, None]:
    """Go on with ``step``, suspended on ``suspended_on``: what it yields goes to the task,
    and what the task sends or throws (a cancellation) goes back to it."""
    while True:
        try:
            value = yield suspended_on
        except GeneratorExit:
            step.close()
            raise
        except BaseException as error:
            try:
                suspended_on = step.throw(error)
            except StopIteration:
                return
        else:
            try:
                suspended_on = step.send(value)
            except StopIteration:
                return
