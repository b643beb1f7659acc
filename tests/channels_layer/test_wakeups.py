"""The layer's one cross-thread wake-up (``channels_layer.mailbox``): a future is resolved on
its own loop, from any thread, and a closed loop or a receiver that has gone is skipped
without an error, so the sender carries on."""

import asyncio
import threading

from channels_layer.mailbox import Mailboxes
from channels_layer.wakeups import call_soon_on, wake


def in_a_thread(function, *args):
    """``function(*args)`` run on a thread of its own; its result."""
    results = []
    thread = threading.Thread(target=lambda: results.append(function(*args)))
    thread.start()
    thread.join(5)
    return results[0]


async def test_a_future_is_resolved_on_its_own_loop_from_another_thread():
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    resolved_on = []
    waiter.add_done_callback(lambda _: resolved_on.append(threading.current_thread()))
    assert in_a_thread(wake, waiter)
    await asyncio.wait_for(waiter, 2)
    assert resolved_on == [threading.current_thread()]


async def test_a_future_of_the_calling_loop_is_resolved_at_once():
    waiter = asyncio.get_running_loop().create_future()
    assert wake(waiter)
    assert waiter.done()


async def test_a_cancelled_future_is_skipped():
    waiter = asyncio.get_running_loop().create_future()
    waiter.cancel()
    assert not wake(waiter)
    assert not in_a_thread(wake, waiter)


def test_a_future_whose_loop_has_closed_is_skipped_from_any_thread():
    loop = asyncio.new_event_loop()
    waiter = loop.create_future()
    loop.close()
    assert not wake(waiter)
    assert not in_a_thread(wake, waiter)
    assert not in_a_thread(call_soon_on, loop, print, "never")


async def test_a_wake_up_still_in_flight_when_its_receiver_is_cancelled_is_harmless():
    waiter = asyncio.get_running_loop().create_future()
    assert in_a_thread(wake, waiter)  # scheduled on this loop, not yet run
    waiter.cancel()
    await asyncio.sleep(0)  # the wake-up runs now, on a cancelled future
    assert waiter.cancelled()


def test_a_message_for_a_receiver_whose_loop_has_closed_goes_to_the_next_one():
    mailboxes = Mailboxes()
    gone = asyncio.new_event_loop()

    async def park():
        return mailboxes.when_ready("chan")

    gone_receiver = gone.run_until_complete(park())
    gone.close()  # its receiver will never run again

    async def receive_after_a_put_from_another_thread():
        getter = asyncio.ensure_future(mailboxes.get("chan"))
        while mailboxes.waiting("chan") < 2:
            await asyncio.sleep(0)
        await asyncio.to_thread(mailboxes.put, "chan", b"payload", 60, None)
        return await asyncio.wait_for(getter, 2)

    assert asyncio.run(receive_after_a_put_from_another_thread()) == (b"payload", None)
    assert not gone_receiver.done()


def test_a_fan_out_from_another_thread_wakes_receivers_on_their_loop_and_skips_gone_ones():
    """``put_many`` from a thread with no loop: each waiting receiver is woken on its own
    loop; a receiver cancelled while parked does not take its channel's message with it."""
    mailboxes = Mailboxes()

    async def fan_out_from_a_thread():
        getters = [asyncio.ensure_future(mailboxes.get(f"c{n}")) for n in range(3)]
        cancelled = asyncio.ensure_future(mailboxes.get("c3"))
        later = asyncio.ensure_future(mailboxes.get("c3"))
        while mailboxes.waiting("c3") < 2:
            await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        channels = ["c0", "c1", "c2", "c3"]
        full = await asyncio.to_thread(mailboxes.put_many, channels, b"p", 60, lambda c: 1)
        assert full == []
        results = await asyncio.wait_for(asyncio.gather(*getters, later), 2)
        assert cancelled.cancelled()
        return results, len(mailboxes)

    results, left = asyncio.run(fan_out_from_a_thread())
    assert results == [(b"p", None)] * 4
    assert left == 0  # nothing queued or parked is left behind


async def test_a_cancelled_when_ready_future_leaves_its_channel_at_once():
    mailboxes = Mailboxes()
    ready = mailboxes.when_ready("chan")
    assert isinstance(ready, asyncio.Future)
    assert mailboxes.waiting("chan") == 1
    assert ready.cancel()
    assert mailboxes.waiting("chan") == 0
    assert "chan" not in mailboxes  # nothing left behind for a channel nobody reads
    assert not ready.cancel()  # cancelled already: nothing more to withdraw


async def test_a_wake_up_handed_to_a_cancelled_when_ready_future_goes_to_the_next_receiver():
    """The sender chose ``first`` (from another thread: its wake-up is in flight), then
    ``first`` is cancelled: the message must wake ``second``, not sit unseen."""
    mailboxes = Mailboxes()
    first = mailboxes.when_ready("chan")
    second = mailboxes.when_ready("chan")
    in_a_thread(mailboxes.put, "chan", b"m", 60, None)
    assert first.cancel()
    await asyncio.wait_for(second, 1)
    assert await mailboxes.get("chan") == (b"m", None)


async def test_a_when_ready_future_awaited_by_a_cancelled_task_leaves_its_channel():
    mailboxes = Mailboxes()
    ready = mailboxes.when_ready("chan")
    task = asyncio.ensure_future(asyncio.wait_for(ready, 60))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert ready.cancelled()
    assert mailboxes.waiting("chan") == 0
