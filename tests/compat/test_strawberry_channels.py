"""strawberry-graphql's Channels integration, run on this project through ``channels_shim``.

Strawberry's own Channels tests are not in its sdist, so these drive the same public API
the way they do: its ``GraphQLWebsocketCommunicator`` (a ``WebsocketCommunicator``
subclass), its HTTP and WebSocket consumers, its router, and ``listen_to_channel`` on the
channel layer.
"""

import json
from collections.abc import AsyncGenerator

from channels_layer import get_channel_layer
from tests.compat import channels_shim

channels_shim.install()

import strawberry  # noqa: E402  (its Channels integration imports channels.*)
from strawberry.channels import (  # noqa: E402  (needs the shim installed first)
    GraphQLHTTPConsumer,
    GraphQLProtocolTypeRouter,
    GraphQLWSConsumer,
)
from strawberry.channels.testing import GraphQLWebsocketCommunicator  # noqa: E402
from strawberry.subscriptions import (  # noqa: E402
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
)

from consumers.testing import HttpCommunicator, WebsocketCommunicator  # noqa: E402


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str = "world") -> str:
        return f"Hello {name}"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, to: int) -> AsyncGenerator[int, None]:
        for number in range(to):
            yield number

    @strawberry.subscription
    async def room(self, info: strawberry.Info, name: str) -> AsyncGenerator[str, None]:
        consumer = info.context["ws"]
        async with consumer.listen_to_channel("room.message", groups=[name]) as messages:
            yield "joined"
            async for message in messages:
                yield message["text"]


schema = strawberry.Schema(query=Query, subscription=Subscription)


async def test_a_subscription_streams_over_graphql_transport_ws():
    application = GraphQLWSConsumer.as_asgi(schema=schema)
    async with GraphQLWebsocketCommunicator(application, "/graphql") as client:
        results = client.subscribe("subscription { count(to: 3) }")
        numbers = [result.data["count"] async for result in results]
    assert numbers == [0, 1, 2]


async def test_a_subscription_streams_over_legacy_graphql_ws():
    # Strawberry's subscribe() helper reads only graphql-transport-ws "next" messages, so
    # the legacy protocol's "data" messages are read here directly.
    application = GraphQLWSConsumer.as_asgi(schema=schema)
    client = GraphQLWebsocketCommunicator(application, "/graphql", protocol=GRAPHQL_WS_PROTOCOL)
    async with client:
        query = {"query": "subscription { count(to: 2) }"}
        await client.send_json_to({"type": "start", "id": "1", "payload": query})
        frames = [await client.receive_json_from() for _ in range(3)]
    assert frames == [
        {"type": "data", "id": "1", "payload": {"data": {"count": 0}}},
        {"type": "data", "id": "1", "payload": {"data": {"count": 1}}},
        {"type": "complete", "id": "1"},
    ]


async def test_a_server_close_then_two_disconnects_as_strawberrys_test_client_does():
    # Strawberry's test client reads raw output without a timeout, closes with
    # disconnect() and disconnects again when its context ends.
    client = WebsocketCommunicator(
        GraphQLWSConsumer.as_asgi(schema=schema),
        "/graphql",
        subprotocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
    )
    assert await client.connect() == (True, GRAPHQL_TRANSPORT_WS_PROTOCOL)
    await client.send_json_to({"type": "NOT_A_MESSAGE_TYPE"})
    close = await client.receive_output(timeout=None)
    assert (close["type"], close["code"]) == ("websocket.close", 4400)
    await client.disconnect()
    await client.disconnect()


async def test_a_subscription_hears_group_messages_through_listen_to_channel():
    application = GraphQLWSConsumer.as_asgi(schema=schema)
    async with GraphQLWebsocketCommunicator(application, "/graphql") as client:
        results = client.subscribe('subscription { room(name: "lobby") }')
        assert (await anext(results)).data == {"room": "joined"}
        await get_channel_layer().group_send("lobby", {"type": "room.message", "text": "hi"})
        assert (await anext(results)).data == {"room": "hi"}
        await results.aclose()


async def test_queries_over_http_through_strawberrys_router():
    router = GraphQLProtocolTypeRouter(schema)
    http = HttpCommunicator(
        router,
        "POST",
        "/graphql",
        body=json.dumps({"query": '{ hello(name: "ada") }'}).encode(),
        headers=[(b"content-type", b"application/json")],
    )
    response = await http.get_response(timeout=5)
    assert response["status"] == 200
    assert json.loads(response["body"]) == {"data": {"hello": "Hello ada"}}


async def test_the_http_consumer_alone_answers_a_get_query():
    consumer = GraphQLHTTPConsumer.as_asgi(schema=schema)
    response = await HttpCommunicator(consumer, "GET", "/graphql?query={hello}").get_response()
    assert json.loads(response["body"]) == {"data": {"hello": "Hello world"}}
