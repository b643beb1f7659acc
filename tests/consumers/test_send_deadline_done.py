"""A send that ends at once gives a done future shared by the connections of its loop (not
one per connection, issue 20), which the running loop's asyncio helpers accept."""

import asyncio

from consumers.send_deadline import SendDeadline


async def quick_send(message):
    pass


def deadline():
    return SendDeadline(quick_send, {"type": "websocket"}, 10)


async def test_quick_sends_of_two_connections_give_the_same_done_future():
    first, second = deadline(), deadline()
    done = first({"type": "websocket.send", "text": "a"})
    assert done.done()
    assert second({"type": "websocket.send", "text": "b"}) is done
    await done


def test_on_another_loop_it_is_a_future_of_that_loop():
    async def send_once():
        done = deadline()({"type": "websocket.send", "text": "a"})
        assert done.get_loop() is asyncio.get_running_loop()
        await asyncio.wait_for(done, 1)  # refuses a future of another loop
        return done

    assert asyncio.run(send_once()) is not asyncio.run(send_once())
