"""The whole deployment, end to end, in two real browsers.

Real processes on loopback: the machine's Redis and PostgreSQL, two Daphne processes, one
``runworker``, and nginx configured from ``deploy/nginx.conf``. Two headless Chromium
sessions sign up as two users, each reaching a different Daphne through nginx, and chat.
Then one Daphne is killed and its user's page reconnects to the other and chats on.
A screenshot of the chat page is saved under ``test-output/`` for a person to look at.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_metrics import scrape, value
from tests.nginx import Nginx, nginx_binary
from testsupport.databases import temporary_database
from testsupport.processes import ROOT, ManagePy, Process
from testsupport.system import free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
OUTPUT = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "test-output"))
ROOM = "e2e"
WAIT = 15  # seconds any one thing may take to show up in a page

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER) and nginx_binary()),
    reason="needs Debian's chromium, chromium-driver and nginx (.ci/run installs them)",
)


@pytest.fixture
def postgres_url():
    """A database of its own on the machine's PostgreSQL, migrated (a copy of one migrated
    once per test run), dropped afterwards."""
    with temporary_database("chat_e2e", migrated=True) as url:
        yield url


@pytest.fixture
def site(postgres_url, redis_url, tmp_path):
    """The deployment: returns nginx's URL and the Daphne processes by server name."""
    static_root = tmp_path / "static"
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"e2e-{secrets.token_hex(4)}",
        "STATIC_ROOT": str(static_root),
        "DJANGO_DEBUG": "0",
        "CHAT_PRESENCE_INTERVAL": "1",
    }
    step = ManagePy("collectstatic", "--noinput", env=env)  # postgres_url is migrated
    assert step.process.wait(60) == 0, step.output
    static_root.chmod(0o755)

    started: list[Process] = []
    daphnes: dict[str, Process] = {}
    ports = []
    nginx = None
    try:
        for name in ("daphne-1", "daphne-2"):
            port = free_port()
            daphne = Process(
                sys.executable,
                "-m",
                "daphne",
                "--proxy-headers",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "project.asgi:application",
                env={**env, "SERVER_NAME": name},
            )
            started.append(daphne)
            daphnes[name] = daphne
            ports.append(port)
        worker = ManagePy("runworker", "chat-moderation", env=env)
        started.append(worker)
        for daphne in daphnes.values():
            daphne.wait_for("Listening on TCP address")
        worker.wait_for("Worker listening on")
        nginx_port = free_port()
        nginx = Nginx(
            nginx_port,
            (f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"),
            static_root,
            tmp_path / "nginx",
        ).start()
        yield f"http://127.0.0.1:{nginx_port}", daphnes, started
    finally:
        if nginx is not None:
            nginx.stop()
        for process in started:
            process.stop()


@pytest.fixture
def browsers(tmp_path):
    """Start headless Chromium sessions on demand; all are quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opened = []

    def open_browser():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tmp_path / f"chromium-{len(opened)}"
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            # This machine's network is closed: no update or sync traffic.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1100,800",
        ):
            options.add_argument(flag)
        browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        with contextlib.suppress(Exception):
            browser.quit()


def wait_until(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(lambda _: condition())
    except Exception as error:
        raise AssertionError(
            f"{what}: not seen within {WAIT} s; the page said {page_state(browser)}"
        ) from error


def page_state(browser) -> dict:
    return browser.execute_script(
        """return {status: document.getElementById('status')?.textContent,
                   members: [...document.querySelectorAll('#members li')].map(e => e.textContent),
                   messages: [...document.querySelectorAll('#messages li')].map(e => e.textContent),
                   error: document.getElementById('error')?.textContent};"""
    )


def sign_up(browser, base: str, name: str) -> None:
    """Sign up through the form and wait until the page says who is logged in."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/accounts/signup/")
    browser.find_element(By.ID, "id_username").send_keys(name)
    for field in ("id_password1", "id_password2"):
        browser.find_element(By.ID, field).send_keys("a-long-e2e-password")
    browser.find_element(By.ID, "signup").click()
    wait_until(browser, lambda: browser.find_elements(By.ID, "me"), f"{name} logged in")


def sign_up_and_enter(browser, base: str, name: str) -> str:
    """Sign up through the form, open the room, wait for the socket; the server reached."""
    sign_up(browser, base, name)
    return enter_room(browser, base)


def enter_room(browser, base: str) -> str:
    """Open the room with the lobby's form (the first one creates it), wait for its socket.

    The room's page is waited for first: a loaded machine may still show the lobby, which
    has no status to read."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/")
    browser.find_element(By.ID, "id_name").send_keys(ROOM)
    browser.find_element(By.ID, "open-room").click()
    wait_until(browser, lambda: browser.find_elements(By.ID, "status"), "the room's page")
    return wait_until(browser, lambda: connected_to(browser), "the room's socket connecting")


def connected_to(browser) -> str | None:
    return browser.execute_script(
        "const s = document.getElementById('status');"
        "return s.dataset.state === 'connected' ? document.getElementById('room').dataset.server"
        " : null;"
    )


def post(browser, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "text")
    box.send_keys(text)
    box.submit()


def shown(browser, text: str, status: str | None = None) -> bool:
    """Whether a message with this text (and moderation status) is on the page."""
    for item in page_messages(browser):
        if item["text"] == text and (status is None or status in item["classes"]):
            return True
    return False


def page_messages(browser) -> list[dict]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#messages li')].map(e =>"
        " ({text: e.querySelector('.text').textContent, classes: e.className}));"
    )


def members(browser) -> list[str]:
    return page_state(browser)["members"]


def two_users_on_two_daphnes(browsers, base: str) -> tuple[Any, Any, str, str]:
    """alice and bob signed up and in the room, each page on another Daphne: their
    browsers, then the Daphne of each."""
    alice, bob = browsers(), browsers()
    alice_server = sign_up_and_enter(alice, base, "alice")
    bob_server = sign_up_and_enter(bob, base, "bob")
    # least_conn sends the second long-lived socket to the other process; reconnecting
    # covers the rare case where alice's page was still between sockets.
    for _ in range(5):
        if bob_server != alice_server:
            break
        bob_server = enter_room(bob, base)
    assert {alice_server, bob_server} == {"daphne-1", "daphne-2"}
    return alice, bob, alice_server, bob_server


def test_two_browsers_chat_through_nginx_across_two_daphnes_and_survive_a_kill(site, browsers):
    base, daphnes, processes = site
    alice, bob, alice_server, bob_server = two_users_on_two_daphnes(browsers, base)

    # Presence is correct across processes: each page lists both.
    for browser in (alice, bob):
        wait_until(browser, lambda b=browser: members(b) == ["alice", "bob"], "both members")
    # Scraped from each Daphne behind nginx: their open sockets add up to the two browsers.
    ports = [int(d.process.args[d.process.args.index("-p") + 1]) for d in daphnes.values()]
    sockets = lambda: sum(value(scrape(p), "consumers_websocket_connections") for p in ports)  # noqa: E731
    wait_until(alice, lambda: sockets() == 2, "each browser's socket counted once")

    # Typing shows on the other page; a message crosses processes through Redis.
    from selenium.webdriver.common.by import By

    alice.find_element(By.ID, "text").send_keys("hello from alice")
    wait_until(bob, lambda: "alice is typing" in bob.find_element(By.ID, "typing").text, "typing")
    alice.find_element(By.ID, "text").submit()
    wait_until(bob, lambda: shown(bob, "hello from alice"), "alice's message on bob's page")

    # The worker's verdict comes back to both pages: accepted, and a banned word removed.
    for browser in (alice, bob):
        wait_until(browser, lambda b=browser: shown(b, "hello from alice", "visible"), "verdict")
    post(bob, "buy spam today")
    for browser in (alice, bob):
        wait_until(
            browser,
            lambda b=browser: shown(b, "[removed by the moderator]", "removed"),
            "the moderation worker removing a message",
        )

    # Markup arrives as text, never as HTML.
    attack = '<img src=x onerror="window.pwned=1">'
    post(bob, attack)
    wait_until(alice, lambda: shown(alice, attack), "markup shown as text")
    assert alice.execute_script("return document.querySelector('#messages img')") is None
    assert alice.execute_script("return window.pwned") is None

    OUTPUT.mkdir(parents=True, exist_ok=True)
    screenshot = OUTPUT / "chat-room.png"
    assert alice.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")

    # Kill alice's Daphne outright: her page reconnects through nginx to the survivor.
    killed_at = time.monotonic()
    daphnes[alice_server].process.kill()
    wait_until(
        alice,
        lambda: alice.find_element(By.ID, "status").get_attribute("data-state") != "connected",
        "the page noticing the lost connection",
    )
    wait_until(alice, lambda: connected_to(alice) == bob_server, "reconnecting to the survivor")
    print(f"reconnected to {bob_server} {time.monotonic() - killed_at:.1f} s after the kill")
    post(alice, "still here after the failover")
    wait_until(bob, lambda: shown(bob, "still here after the failover"), "chat after failover")
    for browser in (alice, bob):
        wait_until(browser, lambda b=browser: members(b) == ["alice", "bob"], "both, again")

    survivors = [p for p in processes if p is not daphnes[alice_server]]
    for process in survivors:
        assert "Traceback" not in process.output, process.output
