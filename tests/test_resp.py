"""The gateway's own Redis connection (gateway/state/resp.py), against a real redis-server: what a
URL may say (password, ACL user, database, unix socket), and that one multiplexed connection keeps
every answer with its call: calls abandoned, timed out, or answered with something not Redis."""

from __future__ import annotations

import argparse
import asyncio
import socket
import uuid

import pytest
from redis.asyncio import Redis

from gateway.cli import _settings
from gateway.keys import Key, Limits
from gateway.state import SharedStateDown
from gateway.state.redis import RedisState
from gateway.state.resp import Address, Connection, packed
from tests.redis_server import free_port, redis_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("url", "address"), [
    ("redis://127.0.0.1:6390/2", Address(port=6390, db=2)),
    ("redis://redis", Address(host="redis")),
    ("redis://:p%40ss@h:1/0", Address(host="h", port=1, password="p@ss")),
    ("redis://gw:pw@h/5", Address(host="h", username="gw", password="pw", db=5)),
    ("rediss://h:6380?db=3", Address(host="h", port=6380, tls=True, db=3)),
    ("unix:///run/redis.sock?db=1", Address(path="/run/redis.sock", db=1)),
])
def test_a_url_says_where_and_who(url: str, address: Address) -> None:
    assert Address.parse(url) == address


@pytest.mark.parametrize("url", ["http://u:hunter2@h/0", "hunter2@h", "redis://u:hunter2@h/zero"])
def test_a_bad_url_is_a_settings_error_without_its_password(url: str, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", url)
    with pytest.raises(SystemExit) as exited:
        _settings(argparse.Namespace())
    assert "GATEWAY_REDIS_URL" in str(exited.value) and "hunter2" not in str(exited.value)


def limited() -> Key:
    return Key(f"k-{uuid.uuid4().hex[:8]}", limits=Limits(requests_per_minute=10))


async def test_a_password_a_user_and_a_database_from_the_url() -> None:
    port = free_port()
    with redis_server(port, "--requirepass", "hunter2") as url:
        async with Redis.from_url(url, password="hunter2") as admin:
            await admin.acl_setuser("gw", enabled=True, passwords=["+gw-secret"], keys=["*"], commands=["+@all"])
            # SCRIPT LOAD refused on connecting: the scripts go by EVAL instead
            await admin.acl_setuser("bare", enabled=True, passwords=["+bare-secret"], keys=["*"],
                                    commands=["+@all", "-script"])
        for who in (":hunter2@", "gw:gw-secret@", "bare:bare-secret@"):
            store = RedisState(f"redis://{who}127.0.0.1:{port}/3", prefix="t:")
            k = limited()
            assert (await store.admit(k, "lease-1", 1)).ticket is not None
            await store.close()
            async with Redis.from_url(f"redis://127.0.0.1:{port}/3", password="hunter2") as db3:
                assert await db3.zcard(f"t:k:{{{k.name}}}:req") == 1
        wrong = RedisState(f"redis://:not-it@127.0.0.1:{port}/0")
        with pytest.raises(SharedStateDown, match="WRONGPASS|invalid") as raised:
            await wrong.admit(limited(), "lease-2", 1)
        assert "not-it" not in str(raised.value)
        await wrong.close()
        bare = RedisState(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(SharedStateDown, match="NOAUTH|unauthenticated"):
            await bare.admit(limited(), "lease-3", 1)
        await bare.close()


async def test_a_unix_socket() -> None:
    with redis_server(None, "--unixsocket", "{dir}/redis.sock", "--unixsocketperm", "700") as url:
        async with Redis.from_url(url) as raw:
            path = (await raw.config_get("unixsocket"))["unixsocket"]
        store = RedisState(f"unix://{path}?db=1")
        assert await store.ping() and (await store.admit(limited(), "lease-1", 1)).ticket is not None
        await store.close()


async def test_calls_given_up_on_leave_every_other_answer_with_its_own_call(redis_url: str) -> None:
    """Many calls at once on the one connection, a third of them cancelled while their answers are
    on the way: each call left gets its own answer, and the connection stays open for the next."""
    connection = Connection(redis_url)
    loop = asyncio.get_running_loop()
    names = [f"t:resp:{uuid.uuid4().hex}" for _ in range(300)]
    async with Redis.from_url(redis_url) as raw:
        await raw.mset({name: f"value of {name}" for name in names})
    calls = [loop.create_task(connection.call(packed("GET", name), loop.time() + 5)) for name in names]
    await asyncio.sleep(0)  # every command written
    for call in calls[::3]:
        call.cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    for i, (name, answer) in enumerate(zip(names, done, strict=True)):
        assert isinstance(answer, asyncio.CancelledError) if i % 3 == 0 else answer == f"value of {name}".encode()
    assert await connection.call(packed("GET", names[0]), loop.time() + 5) == f"value of {names[0]}".encode()
    connection.close()


async def test_an_answer_that_is_not_redis_fails_its_call_and_the_next_connects_again(redis_url: str) -> None:
    """A server that answers its first connection with HTTP, then passes later ones to Redis."""
    real = Address.parse(redis_url)
    connections = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            await reader.read(100)  # held open: the gateway is the one to close it
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(real.host, real.port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, family=socket.AF_INET)
    port = server.sockets[0].getsockname()[1]
    store = RedisState(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    with pytest.raises(SharedStateDown, match="not Redis's protocol"):
        await store.admit(limited(), "lease-1", 1)
    assert await store.ping() and connections == 2  # a new connection, and good answers on it
    await store.close()
    server.close()


async def test_scripts_flushed_from_a_running_server_are_sent_again_whole(redis_url: str) -> None:
    store, k = RedisState(redis_url, prefix=f"t{uuid.uuid4().hex[:6]}:"), limited()
    first = await store.admit(k, "lease-1", 1)
    async with Redis.from_url(redis_url) as raw:
        await raw.script_flush()
    again = await store.admit(k, "lease-2", 1)  # EVALSHA: NOSCRIPT, then EVAL on the same connection
    assert first.requests is not None and again.requests is not None
    assert (first.requests.remaining, again.requests.remaining) == (9, 8)
    await store.close()


async def test_an_answer_of_many_reads_comes_back_whole(redis_url: str) -> None:
    """A stored Response of megabytes arrives in many network reads; hiredis puts it together."""
    store = RedisState(redis_url, timeout=5.0, prefix=f"t{uuid.uuid4().hex[:6]}:")
    response, conversation = bytes(range(256)) * 12_000, b'{"turns": "' + b"x" * 2_000_000 + b'"}'
    await store.put_response("resp_big", "app", response, conversation, ttl=30)
    assert await store.get_response("resp_big", "app") == (response, conversation)
    await store.close()
