"""The chat's pages: sign-up, lobby, rooms, private rooms and invitations."""

import pytest
from django.contrib.auth import get_user_model

from chat.models import Room

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(client):
    user = get_user_model().objects.create_user("ada", password="pw-ada-1234")
    client.force_login(user)
    return user


def test_sign_up_logs_the_new_user_in(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "newbie", "password1": "a-long-pass-42", "password2": "a-long-pass-42"},
    )
    assert response.status_code == 302
    assert client.get("/").context["user"].username == "newbie"


def test_log_in_page_and_room_pages_need_a_login(client):
    assert client.get("/accounts/login/").status_code == 200
    response = client.get("/chat/lobby/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_visiting_a_room_creates_it_public(client, ada):
    response = client.get("/chat/general/")
    assert response.status_code == 200
    assert b'data-room="general"' in response.content
    assert not Room.objects.get(name="general").private


def test_a_private_room_is_hidden_and_closed_to_others(client, ada):
    client.post("/", {"name": "secret", "private": "on"})
    room = Room.objects.get(name="secret")
    assert room.private and list(room.members.all()) == [ada]
    assert client.get("/chat/secret/").status_code == 200
    eve = get_user_model().objects.create_user("eve")
    client.force_login(eve)
    assert client.get("/chat/secret/").status_code == 403
    assert b"secret" not in client.get("/").content
    # Guessing the name in the room form does not get in either.
    response = client.post("/", {"name": "secret"})
    assert client.get(response["Location"]).status_code == 403


def test_a_member_invites_another_user(client, ada):
    room = Room.objects.create(name="club", private=True)
    room.members.add(ada)
    bob = get_user_model().objects.create_user("bob")
    client.post("/chat/club/invite/", {"username": "bob"})
    assert room.members.filter(pk=bob.pk).exists()
    client.force_login(get_user_model().objects.create_user("eve"))
    assert client.post("/chat/club/invite/", {"username": "eve"}).status_code == 403


def test_bad_room_names_are_refused(client, ada):
    assert client.get("/chat/Not%20A%20Slug/").status_code == 404
    response = client.post("/", {"name": "<script>"})
    assert response.status_code == 200 and b"Room names are" in response.content
    assert not Room.objects.exists()
