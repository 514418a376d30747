"""The Redis store beyond the conformance suite (tests/test_state.py): replicas racing on one key,
a Redis that is down or silent (an error within the call's budget, never a hang), one that comes
back, the shared ejections and stored responses, and that every key it writes expires."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.admission import KeyLimits
from gateway.keys import Budget, Key, Limits
from gateway.state import Admission, SharedStateDown, Ticket
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState, _ends
from gateway.state.resp import GRACE
from tests.redis_server import free_port, redis_server

pytestmark = pytest.mark.anyio
WINDOW, TTL = 1.0, 0.6
_LEASES = itertools.count()


def lease() -> str:
    return f"lease-{next(_LEASES)}"


def key(limits: Limits, *budgets: Budget) -> Key:
    return Key(f"k-{uuid.uuid4().hex[:12]}", limits=limits, budgets=budgets)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def replicas(redis_url: str, prefix: str) -> AsyncIterator[list[RedisState]]:
    # a roomier budget than 50 ms: a busy 2-core CI machine opens dozens of connections at once here
    made = [RedisState(redis_url, lease_ttl=TTL, window=WINDOW, timeout=1.0, prefix=prefix) for _ in range(2)]
    yield made
    for store in made:
        await store.close()


async def racing(replicas: list[RedisState], k: Key, count: int, estimate: int = 1) -> list[Admission]:
    return await asyncio.gather(*(replicas[i % 2].admit(k, lease(), estimate) for i in range(count)))


@pytest.mark.parametrize("kind", ["day", "month"])
def test_the_periods_worked_out_once_a_day_are_the_calendars(kind: str) -> None:
    budget = Budget("usd", kind, 1)  # type: ignore[arg-type]
    start = 1_767_139_200  # 2025-12-31T00:00Z: a day, a month and a year end within it
    for moment in range(start - 3 * 86400, start + 3 * 86400, 3599):
        when = datetime.fromtimestamp(moment, UTC)
        first = when.replace(hour=0, minute=0, second=0, microsecond=0, **({} if kind == "day" else {"day": 1}))
        end = first + timedelta(days=1) if kind == "day" else (first + timedelta(days=32)).replace(day=1)
        assert budget.current(moment) == (first.strftime("%Y-%m-%d" if kind == "day" else "%Y-%m"), end.timestamp())
        assert _ends(kind, budget.current(moment)[0]) == end.timestamp()


async def test_replicas_admitting_at_once_never_pass_a_limit_together(replicas: list[RedisState]) -> None:
    assert sum(a.ticket is not None for a in await racing(replicas, key(Limits(requests_per_minute=20)), 50)) == 20
    assert sum(a.ticket is not None for a in await racing(replicas, key(Limits(max_concurrent=7)), 50)) == 7
    assert sum(a.ticket is not None for a in await racing(replicas, key(Limits(tokens_per_minute=1000)), 30,
                                                          estimate=100)) == 10
    budgeted = key(Limits(), Budget("tokens", "day", 500))
    assert sum(a.ticket is not None for a in await racing(replicas, budgeted, 30, estimate=100)) == 5
    assert await replicas[1].spent(budgeted) == [500]


async def test_a_ticket_settles_and_refreshes_on_any_replica(replicas: list[RedisState]) -> None:
    k = key(Limits(max_concurrent=1, tokens_per_minute=100), Budget("usd", "month", 1))
    a = await replicas[0].admit(k, lease(), 80)
    assert a.ticket is not None
    await asyncio.sleep(TTL * 0.7)
    await replicas[1].refresh([a.ticket])
    await asyncio.sleep(TTL * 0.7)  # past the first TTL: kept by the refresh
    assert (await replicas[1].admit(k, lease(), 1)).refused == "concurrency"
    await replicas[1].settle(a.ticket, 30, 0.25)
    b = await replicas[0].admit(k, lease(), 50)
    assert b.ticket is not None and b.tokens is not None and b.tokens.remaining == 20
    assert await replicas[0].spent(k) == [pytest.approx(0.25)]


async def test_the_same_steps_give_the_same_answers_as_the_memory_store(redis_url: str) -> None:
    k = key(Limits(requests_per_minute=4, tokens_per_minute=100, max_concurrent=3),
            Budget("tokens", "day", 1000), Budget("usd", "month", 5))
    stores: list[Any] = [MemoryState(lease_ttl=TTL, window=WINDOW),
                         RedisState(redis_url, lease_ttl=TTL, window=WINDOW, timeout=1.0)]
    answers: list[list[Admission]] = [[], []]
    for store, seen in zip(stores, answers, strict=True):
        for estimate in (40, 70, 30, 20):
            seen.append(await store.admit(k, lease(), estimate))
        await store.settle(seen[0].ticket, 10, 1.0)
        for estimate in (200, 5, 5):
            seen.append(await store.admit(k, lease(), estimate))
        seen.append(Admission(None, retry_after=sum(await store.spent(k))))
    await stores[1].close()
    for memory, redis in zip(*answers, strict=True):
        assert (memory.refused, memory.ticket is None) == (redis.refused, redis.ticket is None)
        assert redis.retry_after == pytest.approx(memory.retry_after, abs=0.05)
        for window in ("requests", "tokens"):
            m, r = getattr(memory, window), getattr(redis, window)
            assert (m is None) == (r is None)
            if m is not None:
                assert (m.limit, m.remaining) == (r.limit, r.remaining)
                assert r.reset == pytest.approx(m.reset, abs=0.05)


def calls(store: RedisState, k: Key) -> list[Callable[[], Awaitable[object]]]:
    ticket = Ticket(k, "lease", 1, tuple(b.current(time.time())[0] for b in k.budgets), store)
    return [lambda: store.admit(k, lease(), 1), lambda: store.settle(ticket, 1, 0.0),
            lambda: store.refresh([ticket]), lambda: store.spent(k), lambda: store.ejections(),
            lambda: store.eject("p", 1), lambda: store.restore("p"), lambda: store.get_response("r", "o"),
            lambda: store.put_response("r", "o", b"", b"", 1), lambda: store.delete_response("r", "o")]


async def assert_down(store: RedisState, k: Key, slowest: float = 0.5) -> None:
    """Every call fails, within ``slowest``; ``k`` needs a lease and a budget for each to ask Redis."""
    for call in calls(store, k):
        started = time.monotonic()
        with pytest.raises(SharedStateDown) as raised:
            await call()
        assert time.monotonic() - started < slowest
        assert "hunter2" not in str(raised.value) and raised.value.__cause__ is None
    started = time.monotonic()
    assert await store.ping() is False and time.monotonic() - started < slowest


async def test_no_redis_at_the_address_is_an_error_at_once_with_no_password_in_it() -> None:
    store = RedisState(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    k = key(Limits(requests_per_minute=5, max_concurrent=2), Budget("usd", "day", 1))
    await assert_down(store, k)
    assert "redis://127.0.0.1:" in repr(store) and "hunter2" not in repr(store)
    await store.close()


async def test_a_redis_that_never_answers_is_an_error_within_the_timeout() -> None:
    with socket.socket() as silent:  # connections are taken (the backlog) and never answered
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        store = RedisState(f"redis://user:hunter2@127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.05)
        started = time.monotonic()
        with pytest.raises(SharedStateDown, match="Redis at redis://127.0.0.1"):
            await store.admit(key(Limits(requests_per_minute=5)), lease(), 1)
        assert 0.04 < time.monotonic() - started < 0.5
        await assert_down(store, key(Limits(max_concurrent=1), Budget("tokens", "month", 9)))
        await store.close()


async def test_a_redis_that_stops_fails_fast_and_is_used_again_once_back() -> None:
    port = free_port()
    k = key(Limits(requests_per_minute=100, max_concurrent=5), Budget("usd", "day", 1))
    with redis_server(port) as url:
        store = RedisState(url)
        assert (await store.admit(k, lease(), 1)).ticket is not None
    await assert_down(store, k)
    with redis_server(port):
        admitted = await store.admit(k, lease(), 1)  # a new server: new connections, scripts loaded again
        assert admitted.ticket is not None and await store.ping()
    await store.close()


async def test_a_call_given_up_on_leaves_no_answer_behind_for_the_next(redis_url: str) -> None:
    """A call past its deadline is cancelled mid-read: its connection must not go back to the pool
    with its answer still to come, or the next call would take that answer for its own."""
    store = RedisState(redis_url, timeout=0.05)
    k = key(Limits(requests_per_minute=100), Budget("usd", "day", 1))
    busy = "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') " \
           "until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 300000 return 1"
    async with Redis.from_url(redis_url) as raw:
        assert (await store.admit(k, lease(), 1)).ticket is not None
        blocking = asyncio.create_task(raw.eval(busy, 0))
        await asyncio.sleep(0.05)
        for call in (lambda: store.admit(k, lease(), 1), lambda: store.spent(k),
                     lambda: store.get_response("resp_x", "o")):
            with pytest.raises(SharedStateDown, match="no answer within 50 ms"):
                await call()
        assert await blocking == 1
    admitted = await store.admit(k, lease(), 1)
    # the admit given up on may still have run once Redis was free: counted, as a lost answer can be
    assert admitted.ticket is not None and admitted.requests is not None and admitted.requests.remaining in (97, 98)
    assert await store.spent(k) == [0.0] and await store.ejections() == {}
    await store.close()


async def test_an_admission_answered_too_late_or_left_is_undone(redis_url: str) -> None:
    """Its request went on without it (the process's own counts) or went away: once Redis is free
    again and the answer comes, what the script counted is taken back."""
    store = RedisState(redis_url, timeout=0.05)
    k = key(Limits(requests_per_minute=3, max_concurrent=1), Budget("tokens", "day", 1000))
    assert (await store.admit(key(Limits(requests_per_minute=1)), lease(), 1)).ticket is not None  # ADMIT loaded
    busy = "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') " \
           "until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 300000 return 1"
    async with Redis.from_url(redis_url) as raw:
        blocking = asyncio.create_task(raw.eval(busy, 0))
        await asyncio.sleep(0.05)
        with pytest.raises(SharedStateDown, match="no answer within 50 ms"):
            await store.admit(k, lease(), 100)
        left = asyncio.create_task(store.admit(k, lease(), 100))
        await asyncio.sleep(0.01)
        left.cancel()
        assert await blocking == 1
    await asyncio.sleep(0.2)  # both answers came, both undone
    kept = await store.admit(k, lease(), 100)
    assert kept.ticket is not None and kept.requests is not None and kept.requests.remaining == 2
    assert await store.spent(k) == [100.0]
    assert (await store.admit(k, lease(), 100)).refused == "concurrency"  # only kept's lease is held
    await store.close()


async def test_a_settlement_answered_late_is_counted_and_only_one_that_cannot_be_is_said_lost(
        redis_url: str) -> None:
    """Past its 50 ms the settlement may still run (Redis was only slow): its cost is then counted,
    and the log must not say it was lost; one sent to a Redis that is gone, or never sent, is."""
    told: list[tuple[str, dict[str, Any]]] = []
    slow = RedisState(redis_url, timeout=0.05)
    limits = KeyLimits(slow, told=lambda event, fields: told.append((event, fields)))
    k = key(Limits(requests_per_minute=10, max_concurrent=2), Budget("usd", "day", 10))
    ticket, _ = await limits.admit(k, lease(), 100)
    busy = "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') " \
           "until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 300000 return 1"
    async with Redis.from_url(redis_url) as raw:
        blocking = asyncio.create_task(raw.eval(busy, 0))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await limits.settle(ticket, 40, 0.25)
        assert time.monotonic() - started < 0.2  # the request's path never waits on a slow Redis
        assert await blocking == 1
    await asyncio.sleep(0.1)
    assert await slow.spent(k) == [0.25]  # counted, late
    assert [event for event, _ in told] == ["shared_state_down"]
    limits = KeyLimits(slow, told=lambda event, fields: told.append((event, fields)))  # (the first went down)
    ticket, _ = await limits.admit(k, lease(), 100)
    assert ticket.store is slow
    async with Redis.from_url(redis_url) as raw:  # silent past GRACE: its connection is closed unanswered
        blocking = asyncio.create_task(raw.eval(busy.replace("300000", str(int((GRACE + 0.3) * 1e6))), 0))
        await asyncio.sleep(0.05)
        await limits.settle(ticket, 40, 0.25)
        assert not any(event == "shared_state_lost_usage" for event, _ in told)  # not yet known
        assert await blocking == 1
    assert ("shared_state_lost_usage", {"key": k.name, "tokens": 40, "cost_usd": 0.25}) in told
    await slow.close()

    port = free_port()
    with redis_server(port) as url:
        stopped = RedisState(url, timeout=0.05)
        gone = KeyLimits(stopped, told=lambda event, fields: told.append((event, fields)))
        ticket, _ = await gone.admit(k, lease(), 100)
    told.clear()
    await gone.settle(ticket, 40, 0.5)  # the server stopped: nothing was counted
    assert ("shared_state_lost_usage", {"key": k.name, "tokens": 40, "cost_usd": 0.5}) in told
    await stopped.close()

    with socket.socket() as silent:  # a connection accepted, never answered: connecting takes the 50 ms
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = RedisState(f"redis://:pw@127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.05)
        said: list[str] = []
        with pytest.raises(SharedStateDown):
            await store.settle(Ticket(k, lease(), 100, ticket.periods, store), 40, 0.5, lambda: said.append("lost"))
        assert said == ["lost"]
        await store.close()


async def test_ejections_are_shared_and_end_on_time_or_on_restore(replicas: list[RedisState]) -> None:
    one, other = replicas
    await one.eject("siliconflow", 0.3)
    await one.eject("toapis", 30)
    seen = await other.ejections()
    assert set(seen) == {"siliconflow", "toapis"}
    assert 0.1 < seen["siliconflow"] <= 0.3 and 29 < seen["toapis"] <= 30
    await asyncio.sleep(0.35)
    assert set(await other.ejections()) == {"toapis"}
    await other.eject("toapis", 5)  # the latest word wins, shorter or not
    assert 4 < (await one.ejections())["toapis"] <= 5
    await other.restore("toapis")
    assert await one.ejections() == {}


async def test_a_stored_response_is_only_its_owners(replicas: list[RedisState]) -> None:
    one, other = replicas
    await one.put_response("resp_1", "search-app", b'{"id":"resp_1"}', b"[1,2]", ttl=30)
    assert await other.get_response("resp_1", "search-app") == (b'{"id":"resp_1"}', b"[1,2]")
    assert await other.get_response("resp_1", "billing") is None
    assert await other.get_response("resp_unknown", "search-app") is None
    assert await other.delete_response("resp_1", "billing") is False
    assert await other.delete_response("resp_1", "search-app") is True
    assert await one.get_response("resp_1", "search-app") is None
    assert await one.delete_response("resp_1", "search-app") is False
    await one.put_response("resp_2", "search-app", b"r", b"c", ttl=0.2)
    await asyncio.sleep(0.3)
    assert await other.get_response("resp_2", "search-app") is None


async def test_every_key_written_expires(replicas: list[RedisState], redis_url: str, prefix: str) -> None:
    store = replicas[0]
    k = key(Limits(requests_per_minute=50, tokens_per_minute=1000, max_concurrent=10),
            Budget("tokens", "day", 10_000), Budget("usd", "month", 10))
    tickets = [a.ticket for a in await racing(replicas, k, 6, estimate=50) if a.ticket is not None]
    await store.refresh(tickets[:3])
    for ticket in tickets[3:]:
        await store.settle(ticket, 20, 0.01)
    await store.eject("maxtoken", 60)
    await store.put_response("resp_ttl", "search-app", b"r", b"c", ttl=60)
    async with Redis.from_url(redis_url) as raw:
        names = [name.decode() async for name in raw.scan_iter(match=f"{prefix}*")]
        ttls = {name: await raw.pttl(name) for name in names}
    kinds = {name.removeprefix(prefix).split(":")[0] + ":" + name.rsplit(":", 1)[-1] for name in names}
    assert {"k:req", "k:tokens", "k:cc", "ejected:ejected", "r:resp_ttl"} <= kinds
    assert sum(name.startswith(f"{prefix}b:") for name in names) == 2
    assert all(ttl > 0 for ttl in ttls.values()), {n: t for n, t in ttls.items() if t <= 0}
