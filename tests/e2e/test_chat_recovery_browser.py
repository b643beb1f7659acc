"""A page that loses its server misses nothing: the deployment of test_chat_browser.py
(nginx, two Daphne processes, the moderation worker, PostgreSQL) on a private Redis.

Alice's Daphne is killed while Bob posts 20 messages; her page reconnects through nginx to
the surviving Daphne and shows those 20 exactly once, in order, marked as caught up (they
came from the room's history in Redis, not from the database). Then Redis restarts with
no data: the room's epoch changes, and her page reloads the room from the database
instead. Her page is kept offline (Chromium's network emulation) while she is away, so
that every post is made while she is gone, whatever the backoff draws.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e import test_chat_browser as deployment
from tests.e2e.test_chat_browser import (
    connected_to,
    page_messages,
    post,
    shown,
    two_users_on_two_daphnes,
    wait_until,
)
from tests.redis_servers import RedisServer

pytestmark = deployment.pytestmark
# The deployment's fixtures, with redis_url below in place of the machine's Redis.
site, browsers, postgres_url = deployment.site, deployment.browsers, deployment.postgres_url


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(private_redis):
    return private_redis.url


def offline(browser, yes: bool) -> None:
    browser.set_network_conditions(
        offline=yes, latency=0, download_throughput=-1, upload_throughput=-1
    )


def recovery(browser) -> dict:
    return browser.execute_script(
        "const r = document.getElementById('room').dataset;"
        "return {state: r.recovery, count: r.recovered,"
        " status: document.getElementById('status').dataset.state};"
    )


def away_then_back(browser, server_reached: str, while_away) -> None:
    """Take the page offline until ``while_away()`` is done, then back to a connection."""
    offline(browser, True)
    while_away()
    offline(browser, False)
    wait_until(browser, lambda: connected_to(browser) == server_reached, "reconnecting")


def test_a_page_that_lost_its_server_shows_exactly_the_posts_it_missed(
    site, browsers, private_redis
):
    from selenium.webdriver.common.by import By

    base, daphnes, _ = site
    alice, bob, alice_server, bob_server = two_users_on_two_daphnes(browsers, base)
    post(bob, "before the kill")
    wait_until(alice, lambda: shown(alice, "before the kill", "visible"), "a first post")

    texts = [f"missed {number:02}" for number in range(20)]

    def kill_and_post():
        daphnes[alice_server].process.kill()
        wait_until(alice, lambda: connected_to(alice) is None, "the page losing its server")
        for text in texts:
            post(bob, text)
            time.sleep(0.25)  # under the chat's rate limit (5 a second, bursts of 10)
        wait_until(bob, lambda: all(shown(bob, text) for text in texts), "bob's 20 posts")

    away_then_back(alice, bob_server, kill_and_post)
    wait_until(alice, lambda: recovery(alice)["state"] == "recovered", "caught up")
    seen = [item for item in page_messages(alice) if item["text"].startswith("missed ")]
    assert [item["text"] for item in seen] == texts  # each once, in order
    assert all("caught-up" in item["classes"] for item in seen)
    assert [item["text"] for item in page_messages(alice)].count("before the kill") == 1
    assert int(recovery(alice)["count"]) >= 20  # the posts, and the verdicts that came
    assert alice.find_element(By.ID, "status").text.endswith("caught up: 20 new posts")
    print(f"alice's page recovered {recovery(alice)['count']} messages (posts and verdicts)")
    deployment.OUTPUT.mkdir(parents=True, exist_ok=True)
    assert alice.save_screenshot(str(deployment.OUTPUT / "chat-recovered.png"))

    # Redis restarts empty: the room's history is gone and its epoch changes. Her page,
    # connected again, hears it from the first post of the new epoch and reloads the room
    # from the database instead of trusting what it has.
    alice.execute_script("document.getElementById('room').dataset.recovery = '';")
    private_redis.kill()
    private_redis.start()
    post(bob, "after the restart")  # the layer retries until its Redis is back
    wait_until(alice, lambda: recovery(alice)["state"] == "reloaded", "the room reloaded")
    wait_until(alice, lambda: shown(alice, "after the restart"), "the post made meanwhile")
    texts_now = [item["text"] for item in page_messages(alice)]
    for text in [*texts, "after the restart"]:
        assert texts_now.count(text) == 1, texts_now
