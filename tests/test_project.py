"""The reference project's ASGI stack, end to end in process."""

import pytest
from django.contrib.auth import get_user_model

from consumers.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator
from project.asgi import application


@pytest.mark.django_db(transaction=True)
async def test_echo_greets_the_logged_in_user():
    user = await get_user_model().objects.acreate(username="ada")
    socket = WebsocketCommunicator(application, "/ws/echo/", headers={"origin": "http://localhost"})
    await socket.force_login(user)
    assert await socket.connect() == (True, None)
    assert await socket.receive_json_from() == {"type": "welcome", "user": "ada"}
    await socket.disconnect()


async def test_echo_echoes_json_for_an_anonymous_visitor():
    socket = WebsocketCommunicator(application, "/ws/echo/", headers={"origin": "http://127.0.0.1"})
    assert await socket.connect() == (True, None)
    assert await socket.receive_json_from() == {"type": "welcome", "user": None}
    await socket.send_json_to({"text": "hello"})
    assert await socket.receive_json_from() == {"type": "echo", "message": {"text": "hello"}}
    await socket.disconnect()


async def test_a_foreign_origin_is_refused():
    socket = WebsocketCommunicator(
        application, "/ws/echo/", headers={"origin": "http://evil.example"}
    )
    assert await socket.connect() == (False, 1000)


@pytest.mark.django_db
async def test_the_echo_page_is_served_over_http():
    response = await HttpCommunicator(application, "GET", "/echo/").get_response()
    assert response["status"] == 200
    assert b"/ws/echo/" in response["body"]


async def test_lifespan_is_answered_for_uvicorn_and_hypercorn():
    app = ApplicationCommunicator(application, {"type": "lifespan"})
    await app.send_input({"type": "lifespan.startup"})
    assert await app.receive_output() == {"type": "lifespan.startup.complete"}
    await app.send_input({"type": "lifespan.shutdown"})
    assert await app.receive_output() == {"type": "lifespan.shutdown.complete"}
    await app.wait()
