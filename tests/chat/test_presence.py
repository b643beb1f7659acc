"""Presence across processes: two Redis layers stand for two server processes."""

import asyncio

from chat.presence import RoomPresence

GROUP = "chat.room.1"


async def lists_seen(layer, inbox, until, seen, timeout=2.0):
    """Update ``seen``, presence lists by source, as a browser in the room would merge them,
    until ``until(seen)``."""
    async with asyncio.timeout(timeout):
        while not until(seen):
            event = await layer.receive(inbox)
            if event["members"]:
                seen[event["source"]] = event["members"]
            else:
                seen.pop(event["source"], None)
    return seen


async def test_each_process_publishes_its_members_and_newcomers_see_all_at_once(make_layer):
    one, two = make_layer(), make_layer()
    browser = await one.new_channel()
    await one.group_add(GROUP, browser)
    seen = {}
    # A long heartbeat: anything seen within the test came from a change or an ask.
    first = RoomPresence(one, GROUP, interval=30)
    first.add("ada")
    assert list((await lists_seen(one, browser, lambda s: s, seen)).values()) == [["ada"]]
    second = RoomPresence(two, GROUP, interval=30)
    second.add("bob")
    second.add("bob")
    merged = await lists_seen(one, browser, lambda s: len(s) == 2, seen)
    assert sorted(merged.values()) == [["ada"], ["bob"]]

    # The second process answers asks from a third that joins later.
    third = RoomPresence(make_layer(), GROUP, interval=30)
    third.add("cy")
    merged = await lists_seen(one, browser, lambda s: len(s) == 3, seen)
    assert sorted(merged.values()) == [["ada"], ["bob"], ["cy"]]

    # Leaving: one of bob's two connections changes nothing; the last one empties the list.
    assert not second.remove("bob")
    assert second.remove("bob")
    merged = await lists_seen(
        one, browser, lambda s: len(s) == 2 and ["bob"] not in s.values(), seen
    )
    assert sorted(merged.values()) == [["ada"], ["cy"]]
    for presence in (first, third):
        presence.remove(next(iter(presence.members)))
    await asyncio.wait_for(asyncio.gather(first._task, second._task, third._task), 2)
