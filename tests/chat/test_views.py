"""The chat's pages: sign-up, lobby, rooms, private rooms and invitations."""

import pytest
from django.contrib.auth import get_user_model

from chat import limits
from chat.models import Room

pytestmark = pytest.mark.django_db

PASSWORD = "pw-ada-1234-long"


@pytest.fixture(autouse=True)
def fresh_limits():
    limits.reset()


@pytest.fixture
def ada(client):
    user = get_user_model().objects.create_user("ada", password=PASSWORD)
    client.force_login(user)
    return user


def sign_up(client, next_url=None):
    query = "" if next_url is None else "?" + next_url
    form = {"username": "newbie", "password1": "a-long-pass-42", "password2": "a-long-pass-42"}
    return client.post("/accounts/signup/" + query, form)


def test_sign_up_logs_the_new_user_in(client):
    response = sign_up(client)
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").context["user"].username == "newbie"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/", "https:evil.example", "/\\evil.example"],
)
def test_sign_up_never_redirects_off_site(client, target):
    from urllib.parse import quote

    response = sign_up(client, "next=" + quote(target, safe=""))
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_sign_up_follows_next_within_the_site_and_a_bare_word_is_no_error(client):
    assert sign_up(client, "next=/chat/general/")["Location"] == "/chat/general/"
    client.logout()
    get_user_model().objects.all().delete()
    response = sign_up(client, "next=nope")
    assert response.status_code == 302


def test_the_login_page_forwards_only_a_safe_next_to_sign_up(client):
    page = client.get("/accounts/login/?next=https://evil.example/").content.decode()
    assert "evil.example" not in page
    page = client.get("/accounts/login/?next=/chat/general/").content.decode()
    assert "/accounts/signup/?next=/chat/general/" in page


def test_the_password_validators_refuse_weak_passwords(client):
    form = {"username": "newbie", "password1": "password123", "password2": "password123"}
    response = client.post("/accounts/signup/", form)
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_log_in_page_and_room_pages_need_a_login(client):
    assert client.get("/accounts/login/").status_code == 200
    response = client.get("/chat/lobby/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_login_attempts_are_throttled_per_user_name(client, settings):
    get_user_model().objects.create_user("ada", password=PASSWORD)
    settings.CHAT_LOGINS_PER_USER = (1e-9, 3)
    for _ in range(3):
        page = client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
        assert b"Too many login attempts" not in page.content
    # Even the right password is refused until the bucket refills.
    page = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert page.status_code == 200 and b"Too many login attempts" in page.content
    settings.CHAT_LOGINS_PER_USER = (1e9, 3)
    page = client.post("/accounts/login/", {"username": "ada", "password": PASSWORD})
    assert page.status_code == 302


def test_login_attempts_are_throttled_per_address(client, settings):
    settings.CHAT_LOGINS_PER_ADDRESS = (1e-9, 4)
    for number in range(4):
        page = client.post("/accounts/login/", {"username": f"u{number}", "password": "x"})
        assert b"Too many login attempts" not in page.content
    page = client.post("/accounts/login/", {"username": "another", "password": "x"})
    assert b"Too many login attempts" in page.content


def test_visiting_a_room_does_not_create_it(client, ada):
    assert client.get("/chat/general/").status_code == 404
    assert not Room.objects.exists()


def test_the_lobby_form_creates_a_public_room_by_post(client, ada):
    response = client.post("/", {"name": "general"})
    assert response["Location"] == "/chat/general/"
    room = Room.objects.get(name="general")
    assert not room.private and room.created_by == ada
    assert b'data-room="general"' in client.get("/chat/general/").content


def test_a_private_room_is_hidden_and_closed_to_others(client, ada):
    client.post("/", {"name": "secret", "private": "on"})
    room = Room.objects.get(name="secret")
    assert room.private and list(room.members.all()) == [ada]
    assert client.get("/chat/secret/").status_code == 200
    eve = get_user_model().objects.create_user("eve")
    client.force_login(eve)
    # The same answer as for a room that does not exist.
    assert client.get("/chat/secret/").status_code == 404
    assert b"secret" not in client.get("/").content
    # Guessing the name in the room form does not get in either.
    response = client.post("/", {"name": "secret"})
    assert response.status_code == 200 and b"That name is taken" in response.content


def test_a_private_room_name_cannot_be_squatted(client, ada):
    eve = get_user_model().objects.create_user("eve")
    client.force_login(eve)
    client.get("/chat/secret/")  # visiting used to create it, public
    client.post("/", {"name": "taken"})  # a public room opened first
    client.force_login(ada)
    response = client.post("/", {"name": "secret", "private": "on"})
    assert response["Location"] == "/chat/secret/"
    room = Room.objects.get(name="secret")
    assert room.private and list(room.members.all()) == [ada]
    # Asking for a private room never lands in someone else's public one.
    response = client.post("/", {"name": "taken", "private": "on"})
    assert response.status_code == 200 and b"That name is taken" in response.content
    assert not Room.objects.get(name="taken").members.filter(pk=ada.pk).exists()


def test_rooms_per_user_are_limited(client, ada, settings):
    settings.CHAT_ROOMS_PER_USER = 2
    for name in ("one", "two"):
        assert client.post("/", {"name": name}).status_code == 302
    response = client.post("/", {"name": "three"})
    assert response.status_code == 200 and b"the most one person may" in response.content
    assert Room.objects.count() == 2
    # Opening an existing public room is not creating one.
    assert client.post("/", {"name": "one"}).status_code == 302


def test_the_lobby_is_paginated(client, ada):
    Room.objects.bulk_create(Room(name=f"room-{number:03}") for number in range(120))
    first = client.get("/").content.decode()
    assert "room-000" in first and "room-049" in first and "room-050" not in first
    assert "Page 1 of 3" in first
    last = client.get("/?page=3").content.decode()
    assert "room-119" in last and "room-099" not in last
    assert client.get("/?page=nope").status_code == 200


def test_a_member_invites_another_user(client, ada):
    room = Room.objects.create(name="club", private=True)
    room.members.add(ada)
    bob = get_user_model().objects.create_user("bob")
    client.post("/chat/club/invite/", {"username": "bob"})
    assert room.members.filter(pk=bob.pk).exists()
    client.force_login(get_user_model().objects.create_user("eve"))
    assert client.post("/chat/club/invite/", {"username": "eve"}).status_code == 404


def test_bad_room_names_are_refused(client, ada):
    assert client.get("/chat/Not%20A%20Slug/").status_code == 404
    response = client.post("/", {"name": "<script>"})
    assert response.status_code == 200 and b"Room names are" in response.content
    assert not Room.objects.exists()
