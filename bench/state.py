"""What a limited key costs a request on the shared state (issue 14: < 0.3 ms p50 over an unlimited
key, which asks no store at all): ``python -m bench.state [--calls N] [--url redis://...]``.

One asyncio loop (uvloop, as ``gateway serve`` runs, unless --asyncio) admits and settles a key
with every limit and both budgets, one request after another, against a redis-server of its own
on loopback (or --url), and prints the percentiles of each step; the in-process store beside it,
and a bare PING's round trip (no client library) as the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import Any
from urllib.parse import urlsplit

from gateway.keys import Budget, Key, Limits
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState

KEY = Key("bench", limits=Limits(requests_per_minute=10**9, tokens_per_minute=10**12, max_concurrent=10**6),
          budgets=(Budget("usd", "month", 1e12), Budget("tokens", "day", 1e15)))


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    at = [ordered[int(len(ordered) * q)] for q in (0.5, 0.9, 0.99)]
    return "p50 {:.1f} us, p90 {:.1f} us, p99 {:.1f} us (mean {:.1f})".format(*at, statistics.fmean(ordered))


async def measure(store: Any, calls: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"admit": [], "settle": [], "admit+settle": []}

    async def timed(step: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
        started = time.perf_counter()
        result = await step()
        return result, (time.perf_counter() - started) * 1e6

    for i in range(calls):
        admission, admit = await timed(lambda: store.admit(KEY, f"lease-{i}", 500))  # noqa: B023
        _, settle = await timed(lambda: store.settle(admission.ticket, 300, 0.001))  # noqa: B023
        if i >= calls // 10:  # the first tenth warms the pool, the script cache and the loop
            times["admit"].append(admit)
            times["settle"].append(settle)
            times["admit+settle"].append(admit + settle)
    return times


async def floor(url: str, calls: int) -> list[float]:
    """A bare PING over one stream: the loopback round trip with no client library, to read the
    others by (this machine's speed swings by half between runs)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 6379)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        writer.write(b"PING\r\n")
        await reader.readline()
        samples.append((time.perf_counter() - started) * 1e6)
    writer.close()
    return samples[calls // 10:]


async def run(url: str, calls: int) -> None:
    print(f"{'floor':6} {'raw PING':12} {percentiles(await floor(url, calls))}")
    redis = RedisState(url, timeout=1.0, prefix=f"bench{time.monotonic_ns()}:")
    for name, store in (("redis", redis), ("memory", MemoryState())):
        for step, samples in (await measure(store, calls)).items():
            print(f"{name:6} {step:12} {percentiles(samples)}")
    await redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--url", help="a Redis to use (default: a redis-server of its own on loopback)")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's own loop, not uvloop")
    args = parser.parse_args()
    if not args.asyncio:
        import uvloop
        uvloop.install()
    if args.url:
        server: Any = nullcontext(args.url)
    else:
        from tests.redis_server import redis_server
        server = redis_server()
    with server as url:
        print(f"{args.calls} calls, {'asyncio' if args.asyncio else 'uvloop'}, {url}")
        asyncio.run(run(url, args.calls))


if __name__ == "__main__":
    main()
