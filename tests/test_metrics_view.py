"""``/metrics`` of the reference project: who may read it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from project.metrics import allowed_networks

OUTSIDE = "203.0.113.9"


@pytest.fixture(autouse=True)
def networks(settings):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32", "10.0.0.0/8"]
    settings.METRICS_TOKEN = "a-long-scrape-token"
    allowed_networks.cache_clear()
    yield
    allowed_networks.cache_clear()


def test_an_allowed_network_reads_the_exposition():
    response = Client(REMOTE_ADDR="10.20.30.40").get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    body = response.content.decode()
    assert "# TYPE consumers_websocket_connections gauge" in body
    assert "# TYPE consumers_layer_call_seconds histogram" in body


def test_anyone_else_gets_a_404():
    assert Client(REMOTE_ADDR=OUTSIDE).get("/metrics").status_code == 404
    wrong = Client(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer a-long-scrape-tokeN")
    assert wrong.get("/metrics").status_code == 404


def test_the_bearer_token_opens_it_from_anywhere():
    client = Client(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer a-long-scrape-token")
    assert client.get("/metrics").status_code == 200


def test_an_empty_token_opens_nothing(settings):
    settings.METRICS_TOKEN = ""
    assert (
        Client(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer ").get("/metrics").status_code == 404
    )


@pytest.mark.django_db
def test_staff_may_read_it_in_a_browser_and_other_users_may_not():
    user = get_user_model().objects.create_user("ada", password="x")
    client = Client(REMOTE_ADDR=OUTSIDE)
    client.force_login(user)
    assert client.get("/metrics").status_code == 404
    user.is_staff = True
    user.save()
    assert client.get("/metrics").status_code == 200
