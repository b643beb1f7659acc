"""What is particular to the Redis layer on a Redis Cluster (its behaviour is tested on both
by test_redis, test_history, test_at_least_once and others): the config and its seed nodes,
where keys live, and that a broadcast is one sharded publish on the group's shard."""

import asyncio

import pytest

from channels_layer.redis import RedisChannelLayer
from testsupport.system import free_port


@pytest.fixture
def on_cluster(make_layer, redis_cluster):
    def make(**config):
        return make_layer(hosts=[redis_cluster.url], cluster=True, **config)

    return make


@pytest.mark.parametrize(
    "hosts",
    [
        [{"sentinels": [("127.0.0.1", 26379)], "master_name": "main"}],
        ["unix:///run/redis.sock"],
        [("127.0.0.1", 7000), {"address": ("127.0.0.1", 7001), "password": "other"}],
    ],
    ids=["sentinel", "socket", "options-differ"],
)
def test_a_cluster_is_configured_by_its_nodes(hosts):
    with pytest.raises(TypeError, match="nodes of the cluster"):
        RedisChannelLayer(hosts=hosts, cluster=True)


@pytest.mark.parametrize("version", ["7.4.0", "8.1.3", "5.0.0b2"])
def test_a_cluster_refuses_a_redis_py_older_than_its_drills_ran(monkeypatch, version):
    monkeypatch.setattr("redis.__version__", version)
    with pytest.raises(RuntimeError, match=f"redis-py >= 8.2; this is {version}"):
        RedisChannelLayer(hosts=["redis://127.0.0.1:7000"], cluster=True)
    RedisChannelLayer(hosts=["redis://127.0.0.1:7000"])  # a single server does not care


@pytest.mark.parametrize("version", ["8.2.0", "8.10.1", "9.0.0rc1"])
def test_a_cluster_takes_redis_py_from_8_2(monkeypatch, version):
    monkeypatch.setattr("redis.__version__", version)
    RedisChannelLayer(hosts=["redis://127.0.0.1:7000"], cluster=True)


async def test_a_process_starts_while_its_first_seed_node_is_down(make_layer, redis_cluster):
    """Seeds are tried in order: the first refuses connections (nothing listens there),
    the layer starts from the next one and finds the whole cluster."""
    down = f"redis://127.0.0.1:{free_port()}"
    others = [node.url for node in redis_cluster.nodes[1:3]]
    sender = make_layer(hosts=[down, *others], cluster=True)
    receiver = make_layer(hosts=[("127.0.0.1", free_port()), redis_cluster.url], cluster=True)
    assert "cluster via redis://127.0.0.1:" in sender._connections.hosts[0].label
    channel = await receiver.new_channel()
    await receiver.group_add("seeded", channel)
    await sender.send(channel, {"type": "direct"})
    await sender.group_send("seeded", {"type": "broadcast"})
    received = [await asyncio.wait_for(receiver.receive(channel), 5) for _ in range(2)]
    assert [message["type"] for message in received] == ["direct", "broadcast"]


async def test_the_keys_of_a_process_and_of_a_group_share_a_slot(on_cluster, redis_cluster):
    sender, idle = on_cluster(), on_cluster()
    channel = await idle.new_channel()  # nobody reads it: the message waits in the inbox
    await sender.send(channel, {"type": "parked"})
    await idle.group_add("room", "worker.jobs")
    raw = redis_cluster.client()
    inbox, pending = (
        idle._key("inbox", idle.client_prefix),
        idle._key("pending", idle.client_prefix),
    )
    assert raw.llen(inbox) == 1 and raw.exists(pending)
    assert raw.keyslot(inbox) == raw.keyslot(pending) == raw.keyslot(idle.client_prefix)
    members = idle._key("group", "room")
    assert raw.zcard(members) == 1
    assert raw.keyslot(members) == raw.keyslot(idle._key("broadcast", "room"))
    raw.close()


def commands(redis_cluster, name):
    """Calls of command ``name`` on each master so far: {port: calls}."""
    counts = {}
    for node in redis_cluster.nodes:
        client = node.client()
        if client.info("replication")["role"] == "master":
            stats = client.info("commandstats").get(f"cmdstat_{name}", {})
            counts[node.port] = stats.get("calls", 0)
        client.close()
    return counts


async def test_group_send_is_one_sharded_publish_on_the_groups_shard(on_cluster, redis_cluster):
    receiver, sender = on_cluster(), on_cluster()
    channels = [await receiver.new_channel() for _ in range(50)]
    for channel in channels:
        await receiver.group_add("crowd", channel)
    spublish, publish = commands(redis_cluster, "spublish"), commands(redis_cluster, "publish")
    await sender.group_send("crowd", {"type": "hello"})
    for channel in channels:
        assert (await asyncio.wait_for(receiver.receive(channel), 2))["type"] == "hello"
    more = commands(redis_cluster, "spublish")
    grew = {port: more[port] - spublish[port] for port in more if more[port] != spublish[port]}
    assert list(grew.values()) == [1]  # one publish, on one shard, whatever the membership
    [port] = grew
    raw = redis_cluster.client()
    assert raw.get_node_from_key(sender._key("broadcast", "crowd")).port == port
    raw.close()
    assert commands(redis_cluster, "publish") == publish  # no cluster-wide PUBLISH


async def test_joining_and_leaving_groups_does_not_wait_for_the_readers_idle_read(on_cluster):
    layer = on_cluster()
    channel = await layer.new_channel()
    await layer.group_add("first", channel)  # the sharded reader now waits for messages
    await layer.group_send("first", {"type": "hello"})
    assert (await asyncio.wait_for(layer.receive(channel), 2))["type"] == "hello"
    started = asyncio.get_running_loop().time()
    for number in range(5):
        await layer.group_add(f"other-{number}", channel)
    for number in range(5):
        await layer.group_discard(f"other-{number}", channel)
    took = asyncio.get_running_loop().time() - started
    # Each SSUBSCRIBE/SUNSUBSCRIBE waited up to a second behind the reader's idle read
    # (4.7 s for these ten here); a few round trips each now, with room for a busy machine.
    assert took < 2.5, f"10 joins and leaves took {took:.2f} s"
