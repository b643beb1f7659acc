"""The testing communicators behave as Channels' do, on top of asgiref's."""

import asyncio
import contextvars

import pytest
from asgiref.testing import ApplicationCommunicator as AsgirefCommunicator

from consumers.consumer import AsyncConsumer
from consumers.exceptions import StopConsumer
from consumers.generic.http import AsyncHttpConsumer
from consumers.generic.websocket import AsyncWebsocketConsumer
from consumers.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator


class Echo(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept(headers=[(b"X-Served-By", b"echo"), ("Set-Cookie", "a=1")])

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "crash":
            raise RuntimeError("boom")
        await self.send(text_data=text_data)


class PlainHttp(AsyncConsumer):
    """Answers a request and stays alive, as a plain ``AsyncConsumer`` does."""

    async def http_request(self, message):
        await self.send({"type": "http.response.start", "status": 200, "trailers": False})
        await self.send({"type": "http.response.body", "body": b"one ", "more_body": True})
        await self.send({"type": "http.response.body", "body": b"two"})


class LibraryCommunicator(WebsocketCommunicator):
    """Overrides ``receive_output`` through asgiref's attributes, as libraries built on
    Channels do (a REST-over-WebSocket framework's tests use this very shape), so that a
    timeout leaves the application running."""

    async def receive_output(self, timeout=1):
        if self.future.done():
            self.future.result()
        try:
            async with asyncio.timeout(timeout):
                return await self.output_queue.get()
        except TimeoutError:
            if self.future.done():
                self.future.result()
            raise


def test_communicators_are_asgirefs():
    for communicator in (ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator):
        assert issubclass(communicator, AsgirefCommunicator)


async def test_asgiref_attributes_are_there_and_live():
    socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    # As in asgiref, the application starts when ``future`` is first read.
    assert isinstance(socket.future, asyncio.Task)
    await socket.input_queue.put({"type": "websocket.connect"})
    accept = await asyncio.wait_for(socket.output_queue.get(), 5)
    assert accept["type"] == "websocket.accept"
    assert not socket.future.done()
    await socket.disconnect()
    assert socket.future.done()


async def test_a_library_override_of_receive_output_works_and_keeps_the_app_running():
    socket = LibraryCommunicator(Echo.as_asgi(), "/ws/")
    assert await socket.connect() == (True, None)
    with pytest.raises(TimeoutError):
        await socket.receive_from(timeout=0.05)
    await socket.send_to(text_data="still there")
    assert await socket.receive_from() == "still there"
    await socket.disconnect()


async def test_a_second_disconnect_is_ignored():
    socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    await socket.connect()
    await socket.disconnect()
    await socket.disconnect()
    await socket.send_input({"type": "websocket.receive", "text": "late"})


async def test_after_a_crash_disconnect_and_send_input_raise_the_crash():
    async def crashing(scope, receive, send):
        await receive()
        raise RuntimeError("boom")

    app = ApplicationCommunicator(crashing, {"type": "websocket"})
    await app.send_input({"type": "websocket.connect"})
    with pytest.raises(RuntimeError, match="boom"):
        await app.wait()
    with pytest.raises(RuntimeError, match="boom"):
        await app.send_input({"type": "websocket.disconnect", "code": 1000})


async def test_a_crash_surfaces_from_receive_output_without_waiting_for_the_timeout():
    socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    await socket.connect()
    await socket.send_to(text_data="crash")
    loop = asyncio.get_running_loop()
    started = loop.time()
    # The consumer closes with 1011 and then ends; the close arrives, nothing after it.
    assert (await socket.receive_output(timeout=5))["code"] == 1011
    await socket.send_input({"type": "websocket.disconnect", "code": 1011})
    with pytest.raises(TimeoutError, match="finished without sending"):
        await socket.receive_output(timeout=5)
    assert loop.time() - started < 1


async def test_receive_output_times_out_and_cancels_the_application():
    socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    await socket.connect()
    with pytest.raises(TimeoutError):
        await socket.receive_output(timeout=0.05)
    assert socket.future.cancelled()


async def test_get_response_returns_once_the_body_is_complete_without_waiting_for_exit():
    http = HttpCommunicator(PlainHttp.as_asgi(), "GET", "/")
    response = await http.get_response(timeout=5)
    assert response == {"status": 200, "trailers": False, "headers": [], "body": b"one two"}
    assert not http.future.done()
    http.stop()


async def test_get_response_sends_the_request_once():
    class Counting(AsyncHttpConsumer):
        bodies: list = []

        async def handle(self, body):
            type(self).bodies.append(body)
            await self.send_response(200, b"ok")

    http = HttpCommunicator(Counting.as_asgi(), "POST", "/", body=b"payload")
    assert (await http.get_response())["body"] == b"ok"
    with pytest.raises(TimeoutError):
        await http.get_response(timeout=0.05)
    assert Counting.bodies == [b"payload"]


async def test_response_headers_are_the_accept_headers_as_sent():
    socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    assert socket.response_headers is None
    await socket.connect()
    assert socket.response_headers == [(b"X-Served-By", b"echo"), (b"Set-Cookie", b"a=1")]
    await socket.disconnect()


async def test_accept_headers_reach_the_communicator_in_the_form_they_were_given():
    class Lists(AsyncWebsocketConsumer):
        async def connect(self):
            await self.accept(headers=[[b"x-a", b"1"], (b"x-b", b"2"), ("x-c", "3")])

    socket = WebsocketCommunicator(Lists.as_asgi(), "/ws/")
    await socket.connect()
    assert socket.response_headers == [[b"x-a", b"1"], (b"x-b", b"2"), (b"x-c", b"3")]
    await socket.disconnect()


async def test_response_headers_default_to_an_empty_list():
    async def bare_accept(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    socket = WebsocketCommunicator(bare_accept, "/ws/")
    await socket.connect()
    assert socket.response_headers == []
    await socket.disconnect()


async def test_the_application_starts_in_a_fresh_context_as_under_asgiref():
    marker = contextvars.ContextVar("marker", default="unset")
    marker.set("from the test")

    async def report(scope, receive, send):
        await send({"type": "seen", "value": marker.get()})

    app = ApplicationCommunicator(report, {"type": "custom"})
    assert (await app.receive_output())["value"] == "unset"


def test_bad_arguments_are_refused_as_in_channels():
    with pytest.raises(TypeError, match="path must be a str"):
        WebsocketCommunicator(Echo.as_asgi(), b"/ws/")
    with pytest.raises(AssertionError, match="body must be bytes"):
        HttpCommunicator(PlainHttp.as_asgi(), "POST", "/", body="text")


def test_scope_path_and_query_string_are_decoded_and_utf8_encoded():
    scope = WebsocketCommunicator(Echo.as_asgi(), "/caf%C3%A9/?q=thé&x=1").scope
    assert scope["path"] == "/café/"
    assert scope["raw_path"] == b"/caf%C3%A9/"
    assert scope["query_string"] == "q=thé&x=1".encode()


async def test_stop_consumer_from_a_plain_consumer_ends_the_application():
    class Once(AsyncConsumer):
        async def websocket_connect(self, message):
            await self.send({"type": "websocket.close", "code": 4000})
            raise StopConsumer

    socket = WebsocketCommunicator(Once.as_asgi(), "/ws/")
    assert await socket.connect() == (False, 4000)
    await socket.wait()
    await socket.disconnect()


async def test_send_to_without_data_fails_as_an_assertion_as_in_channels():
    socket = WebsocketCommunicator(Echo.as_asgi(), "/ws/")
    with pytest.raises(AssertionError, match="text_data or bytes_data"):
        await socket.send_to()
