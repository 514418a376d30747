"""One conformance suite over every store of shared state (gateway/state): the in-process one and
Redis (a real redis-server on loopback). Windows are shortened to a second so that sliding them
takes real time without taking long; the rules are those of gateway/state/__init__.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.keys import Budget, Key, Limits
from gateway.state import State
from gateway.state.memory import MemoryState

pytestmark = pytest.mark.anyio

WINDOW, TTL = 1.0, 0.6
_LEASES = itertools.count()
_NAMES = itertools.count()
StoreFactory = Callable[[], State]


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Makes stores that share their state as replicas do: the same dict for memory (one store),
    the same Redis for redis (a new client each, as another replica would have)."""
    if request.param == "memory":
        shared = MemoryState(lease_ttl=TTL, window=WINDOW)
        yield lambda: shared
        return
    from gateway.state.redis import RedisState
    url = request.getfixturevalue("redis_url")
    made: list[RedisState] = []

    def make() -> State:
        made.append(RedisState(url, lease_ttl=TTL, window=WINDOW))
        return made[-1]
    yield make
    for store in made:
        await store.close()


def key(**limits: int) -> Key:
    budgets = tuple(Budget(*name.split("_per_"), cap) for name, cap in limits.items()  # type: ignore[arg-type]
                    if "_per_" in name and name.split("_per_")[0] in ("usd", "tokens")
                    and name.split("_per_")[1] in ("day", "month"))
    plain = {n: v for n, v in limits.items() if n in ("requests_per_minute", "tokens_per_minute", "max_concurrent")}
    return Key(f"k{next(_NAMES)}-{time.monotonic_ns()}", limits=Limits(**plain), budgets=budgets)


def lease() -> str:
    return f"lease-{next(_LEASES)}"


async def test_requests_are_limited_over_a_sliding_window(stores: StoreFactory) -> None:
    store, k = stores(), key(requests_per_minute=5)
    first = [await store.admit(k, lease(), 1) for _ in range(3)]
    await asyncio.sleep(WINDOW / 2)
    later = [await store.admit(k, lease(), 1) for _ in range(2)]
    assert all(a.ticket is not None for a in first + later)
    assert [a.requests.remaining for a in first + later if a.requests] == [4, 3, 2, 1, 0]
    refused = await store.admit(k, lease(), 1)
    assert refused.ticket is None and refused.refused == "requests"
    assert 0 < refused.retry_after <= WINDOW / 2 + 0.05  # when the first three leave
    await asyncio.sleep(refused.retry_after + 0.05)
    again = [await store.admit(k, lease(), 1) for _ in range(4)]  # three left the log, two did not
    assert [a.ticket is not None for a in again] == [True, True, True, False]


async def test_tokens_are_admitted_on_the_estimate_and_settled_on_the_usage(stores: StoreFactory) -> None:
    store, k = stores(), key(tokens_per_minute=100)
    a = await store.admit(k, lease(), 60)
    assert a.ticket is not None and a.tokens is not None and a.tokens.remaining == 40
    assert (await store.admit(k, lease(), 50)).refused == "tokens"  # 60 + 50 > 100
    await store.settle(a.ticket, 10, 0.0)  # it used 10: 90 left
    b = await store.admit(k, lease(), 50)
    assert b.ticket is not None and b.tokens is not None and b.tokens.remaining == 40


async def test_an_estimate_above_the_limit_still_goes_alone(stores: StoreFactory) -> None:
    store, k = stores(), key(tokens_per_minute=100)
    big = await store.admit(k, lease(), 10_000)  # counted as the whole limit, never refused for ever
    assert big.ticket is not None
    refused = await store.admit(k, lease(), 1)
    assert refused.refused == "tokens" and 0 < refused.retry_after <= WINDOW + 0.05


async def test_a_refusal_takes_nothing(stores: StoreFactory) -> None:
    store, k = stores(), key(requests_per_minute=3, tokens_per_minute=100)
    assert (await store.admit(k, lease(), 90)).ticket is not None
    for _ in range(5):
        assert (await store.admit(k, lease(), 50)).refused == "tokens"
    small = await store.admit(k, lease(), 5)  # the refused ones took no request either
    assert small.ticket is not None and small.requests is not None and small.requests.remaining == 1


async def test_an_undone_admission_counts_nowhere(stores: StoreFactory) -> None:
    """A request no route could take (the handler asked for its admission before checking it)."""
    store = stores()
    k = key(requests_per_minute=2, tokens_per_minute=100, max_concurrent=1, tokens_per_day=150)
    for _ in range(3):
        asked = await store.admit(k, lease(), 90)
        assert asked.ticket is not None and asked.requests is not None and asked.requests.remaining == 1
        await store.undo(asked.ticket)
    assert await store.spent(k) == [0.0]
    kept = await store.admit(k, lease(), 90)
    assert kept.ticket is not None and kept.tokens is not None and kept.tokens.remaining == 10
    await store.settle(kept.ticket, 40, 0.0)
    last = await store.admit(k, lease(), 60)
    assert last.ticket is not None and last.requests is not None and last.requests.remaining == 0
    assert last.tokens is not None and last.tokens.remaining == 0 and await store.spent(k) == [100.0]


async def test_concurrency_leases_end_on_settling_or_when_not_refreshed(stores: StoreFactory) -> None:
    store, k = stores(), key(max_concurrent=2)
    a, b = await store.admit(k, lease(), 1), await store.admit(k, lease(), 1)
    assert a.ticket and b.ticket
    assert (await store.admit(k, lease(), 1)).refused == "concurrency"
    await store.settle(a.ticket, 1, 0.0)
    c = await store.admit(k, lease(), 1)
    assert c.ticket is not None
    for _ in range(3):  # b is refreshed past its TTL; c is left to expire (its replica died)
        await asyncio.sleep(TTL / 2)
        await store.refresh([b.ticket])
    d = await store.admit(k, lease(), 1)
    assert d.ticket is not None, "c's lease should have expired"
    assert (await store.admit(k, lease(), 1)).refused == "concurrency", "b's lease should have been kept"


async def test_a_token_budget_holds_estimates_of_requests_running_at_once(stores: StoreFactory) -> None:
    store, k = stores(), key(tokens_per_month=100)
    a = await store.admit(k, lease(), 60)
    b = await store.admit(k, lease(), 60)  # 60 < 100: admitted; now 120 are held
    assert a.ticket and b.ticket
    refused = await store.admit(k, lease(), 1)
    assert refused.refused == "budget" and refused.budget is not None and refused.budget.name == "tokens_per_month"
    assert refused.budget_resets > time.time() and refused.retry_after > 0
    await store.settle(a.ticket, 5, 0.0)
    await store.settle(b.ticket, 5, 0.0)
    assert await store.spent(k) == [10]
    assert (await store.admit(k, lease(), 1)).ticket is not None


async def test_a_usd_budget_is_charged_the_cost_on_settling(stores: StoreFactory) -> None:
    store, k = stores(), key(usd_per_day=1)
    a = await store.admit(k, lease(), 1000)
    assert a.ticket is not None
    await store.settle(a.ticket, 1000, 0.75)
    assert await store.spent(k) == [pytest.approx(0.75)]
    b = await store.admit(k, lease(), 1000)
    assert b.ticket is not None
    await store.settle(b.ticket, 1000, 0.5)
    refused = await store.admit(k, lease(), 1)
    assert refused.refused == "budget" and refused.budget is not None and refused.budget.name == "usd_per_day"


async def test_replicas_share_one_count(stores: StoreFactory) -> None:
    replicas, k = [stores() for _ in range(3)], key(requests_per_minute=10, max_concurrent=4)
    admitted = [await replicas[i % 3].admit(k, lease(), 1) for i in range(12)]
    assert sum(a.ticket is not None for a in admitted) == 4  # the concurrency cap, across all three
    for a in admitted:
        if a.ticket is not None:
            await replicas[0].settle(a.ticket, 1, 0.0)
    more = [await replicas[i % 3].admit(k, lease(), 1) for i in range(12)]
    assert sum(a.ticket is not None for a in more) == 4


async def test_a_reloaded_limit_applies_to_the_next_request(stores: StoreFactory) -> None:
    store, k = stores(), key(requests_per_minute=2)
    for _ in range(2):
        assert (await store.admit(k, lease(), 1)).ticket is not None
    assert (await store.admit(k, lease(), 1)).refused == "requests"
    raised = Key(k.name, limits=Limits(requests_per_minute=3))  # the same key, after a reload
    assert (await store.admit(raised, lease(), 1)).ticket is not None
    assert (await store.admit(raised, lease(), 1)).refused == "requests"


async def test_a_refusal_after_the_log_drops_entries_leaves_no_tokens_behind(stores: StoreFactory) -> None:
    """Once everything has left the log (and its keys expired), the log's sum is 0 too."""
    store, k = stores(), key(tokens_per_minute=100)
    first = await store.admit(k, lease(), 60)
    assert first.ticket is not None
    await store.settle(first.ticket, 60, 0.0)
    await asyncio.sleep(WINDOW / 2)
    second = await store.admit(k, lease(), 40)
    assert second.ticket is not None
    await store.settle(second.ticket, 40, 0.0)
    await asyncio.sleep(WINDOW / 2 + 0.1)
    assert (await store.admit(k, lease(), 80)).refused == "tokens"  # the first left; 40 + 80 > 100
    await asyncio.sleep(WINDOW + 0.5)  # the second left too, and the log's keys expired (not a sum of them)
    alone = await store.admit(k, lease(), 100)
    assert alone.ticket is not None and alone.tokens is not None and alone.tokens.remaining == 0
