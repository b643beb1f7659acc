"""AsyncHttpConsumer: whole responses and streams such as Server-Sent Events."""

from channels_layer import get_channel_layer
from consumers.generic.http import AsyncHttpConsumer
from consumers.testing import HttpCommunicator


class Hello(AsyncHttpConsumer):
    async def handle(self, body):
        await self.send_response(
            201, b"got " + body, headers={"Content-Type": "text/plain", "X-Count": "1"}
        )


class Events(AsyncHttpConsumer):
    """Streams events sent to its channel until an event says it is the last."""

    disconnects = 0

    async def handle(self, body):
        await self.send_headers(headers=[(b"content-type", b"text/event-stream")])
        await self.send_body(f"data: {self.channel_name}\n\n".encode(), more_body=True)

    async def news_event(self, message):
        await self.send_body(f"data: {message['text']}\n\n".encode(), more_body=not message["last"])

    async def disconnect(self):
        type(self).disconnects += 1


async def test_send_response_sends_status_headers_and_body():
    response = await HttpCommunicator(Hello.as_asgi(), "POST", "/", body=b"data").get_response()
    assert response["status"] == 201
    assert response["body"] == b"got data"
    # Header names reach the server as written, as in Channels.
    assert response["headers"] == [(b"Content-Type", b"text/plain"), (b"X-Count", b"1")]


async def test_request_body_in_several_chunks_is_joined_before_handle():
    http = HttpCommunicator(Hello.as_asgi(), "POST", "/")
    await http.send_input({"type": "http.request", "body": b"one ", "more_body": True})
    await http.send_input({"type": "http.request", "body": b"two"})
    assert (await http.receive_output())["status"] == 201
    assert (await http.receive_output())["body"] == b"got one two"
    await http.wait()


async def test_a_stream_continues_from_layer_messages_and_ends_with_the_last_chunk():
    Events.disconnects = 0
    http = HttpCommunicator(Events.as_asgi(), "GET", "/events")
    await http.send_input({"type": "http.request", "body": b""})
    assert (await http.receive_output())["status"] == 200
    first = await http.receive_output()
    assert first["more_body"] is True
    channel_name = first["body"].decode().removeprefix("data: ").strip()
    layer = get_channel_layer()
    await layer.send(channel_name, {"type": "news.event", "text": "one", "last": False})
    assert (await http.receive_output())["body"] == b"data: one\n\n"
    await layer.send(channel_name, {"type": "news.event", "text": "two", "last": True})
    last = await http.receive_output()
    assert (last["body"], last["more_body"]) == (b"data: two\n\n", False)
    await http.wait()
    assert Events.disconnects == 1


async def test_client_going_away_ends_a_stream_and_calls_disconnect():
    Events.disconnects = 0
    http = HttpCommunicator(Events.as_asgi(), "GET", "/events")
    await http.send_input({"type": "http.request", "body": b""})
    await http.receive_output()
    await http.receive_output()
    await http.send_input({"type": "http.disconnect"})
    await http.wait()
    assert Events.disconnects == 1
