"""Sockets end with the session, in real browsers through nginx and two Daphnes.

Alice has the room open in two tabs, Bob in his own browser. Alice logs out in her first
tab: her second tab's room closes with 4401 and says why, and Bob's member list loses
Alice exactly once. The deployment and browsers are test_chat_browser.py's fixtures.
"""

from __future__ import annotations

import time

from tests.e2e.test_chat_browser import (  # noqa: F401 (fixtures)
    ROOM,
    browsers,
    enter_room,
    members,
    page_state,
    postgres_url,
    sign_up,
    site,
    wait_until,
)

LOGGED_OUT = 4401

# Every change of Bob's member list, as the page showed it, recorded by the page itself.
RECORD_MEMBERS = """
window.memberLists = [];
const list = document.getElementById('members');
const snapshot = () => window.memberLists.push(
    [...list.querySelectorAll('li')].map((e) => e.textContent));
snapshot();
new MutationObserver(snapshot).observe(list, {childList: true});
"""


def close_state(browser) -> dict:
    return browser.execute_script(
        "const s = document.getElementById('status');"
        "return {state: s.dataset.state, code: s.dataset.code, text: s.textContent};"
    )


def test_logging_out_in_one_tab_closes_the_room_in_the_other(site, browsers):  # noqa: F811
    from selenium.webdriver.common.by import By

    base, _, _ = site
    alice, bob = browsers(), browsers()
    sign_up(alice, base, "alice")
    enter_room(alice, base)
    first_tab = alice.current_window_handle
    alice.switch_to.new_window("tab")
    second_tab = alice.current_window_handle
    enter_room(alice, base)
    sign_up(bob, base, "bob")
    enter_room(bob, base)
    wait_until(bob, lambda: members(bob) == ["alice", "bob"], "both on bob's list")
    bob.execute_script(RECORD_MEMBERS)

    alice.switch_to.window(first_tab)
    alice.find_element(By.CSS_SELECTOR, "header form button").click()  # Log out
    wait_until(alice, lambda: not alice.find_elements(By.ID, "me"), "alice logged out")

    alice.switch_to.window(second_tab)
    wait_until(alice, lambda: close_state(alice)["state"] == "closed", "the second tab closing")
    closed = close_state(alice)
    assert closed["code"] == str(LOGGED_OUT), closed
    assert "logged out" in closed["text"], closed
    # It stays closed: no reconnecting with a session that has ended.
    time.sleep(2)
    assert close_state(alice) == closed

    wait_until(bob, lambda: members(bob) == ["bob"], "alice leaving bob's list")
    lists = bob.execute_script("return window.memberLists;")
    shown = [("alice" in names) for names in lists]
    # Listed until she left, then never again: she left once.
    assert shown[0] and not shown[-1], lists
    assert shown.count(True) == shown.index(False), lists
    assert page_state(bob)["status"].startswith("Connected"), page_state(bob)
