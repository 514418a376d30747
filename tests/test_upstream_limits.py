"""Issue 11, the upstream side: no upstream can take the gateway's connections or memory.

- Each provider has a pool of its own: one that stalls with its pool full of held streams leaves
  every other provider as fast as before and healthy; its own extra requests wait ``pool.wait``,
  then go to the next route or get 503 ``pool_exhausted`` with Retry-After, and its health is not
  marked down (the gateway's capacity is not the provider's failure).
- A JSON answer past GATEWAY_MAX_UPSTREAM_BYTES is cut while read, and a body in a Content-Encoding
  the gateway did not ask for is refused unread: a gzip bomb and a 100 MiB answer leave the
  gateway's memory where it was, and the client gets 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from gateway.config import ConfigError, load
from gateway.pools import Slots
from tests.conftest import CLIENT_KEY, UPSTREAM_KEYS, Simulator, start_gateway
from tests.test_metrics import scrape, value
from tests.test_operate import Served, gateway_process, wait_until

USER = {"role": "user", "content": "Hello"}
MIB = 1 << 20


def config(sim: Simulator, stuck: str = "", backup: str = "") -> str:
    """stuck (toapis' page) is the one that stalls; other (maxtoken's) and backup (siliconflow's) answer."""
    return (f"providers:\n"
            f"  stuck:\n    profile: toapis\n    base_url: {sim.url}/toapis/v1\n"
            f"    api_key: {UPSTREAM_KEYS['toapis']}\n    timeout: {{connect: 2}}\n{stuck}"
            f"  other:\n    profile: maxtoken\n    base_url: {sim.url}/maxtoken/v1\n"
            f"    api_key: {UPSTREAM_KEYS['maxtoken']}\n    timeout: {{connect: 2}}\n"
            f"  backup:\n    profile: siliconflow\n    base_url: {sim.url}/siliconflow/v1\n"
            f"    api_key: {UPSTREAM_KEYS['siliconflow']}\n    timeout: {{connect: 2}}\n{backup}"
            "models:\n"
            "  glm-stuck:\n    - {provider: stuck, model: glm-5}\n"
            "  glm-other:\n    - {provider: other, model: glm-5-turbo}\n"
            "  glm-stuck-pair:\n    - {provider: stuck, model: glm-5}\n"
            "    - {provider: backup, model: Qwen/QwQ-32B}\n")


class Held:
    """Streams opened on raw sockets and held unread: cheap enough for a thousand at once."""

    def __init__(self, url: str, model: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        body = orjson.dumps({"model": model, "messages": [USER], "stream": True})
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json"
                        f"\r\ncontent-length: {len(body)}\r\n{extra}\r\n").encode() + body
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._heads_read = 0

    async def open(self, n: int) -> None:
        opened = await asyncio.gather(*(asyncio.open_connection(self.host, self.port) for _ in range(n)))
        for _, writer in opened:
            writer.write(self.request)
        await asyncio.gather(*(writer.drain() for _, writer in opened))
        self.streams += opened

    async def statuses(self, timeout: float) -> list[tuple[int, dict[str, str]]]:
        """The status and headers of each stream opened since the last call (a held stream's 200
        comes with its first event)."""
        async def head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            status, *lines = raw.decode("latin-1").split("\r\n")
            return int(status.split()[1]), {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)
                                            if k}
        unread, self._heads_read = self.streams[self._heads_read:], len(self.streams)
        return await asyncio.gather(*(head(reader) for reader, _ in unread))

    async def close(self) -> None:
        for _, writer in self.streams:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in self.streams), return_exceptions=True)
        self.streams.clear()


@contextlib.asynccontextmanager
async def held(url: str, model: str) -> AsyncIterator[Held]:
    streams = Held(url, model)
    try:
        yield streams
    finally:
        await streams.close()


def timed(http: httpx.Client, model: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = http.post("/v1/chat/completions", json={"model": model, "messages": [USER]})
    return time.perf_counter() - started, response


def settled(url: str, timeout: float = 5) -> None:
    wait_until(lambda: value(scrape(url), "gateway_inflight_requests") == 0, what="nothing in flight", timeout=timeout)


def test_a_stalling_provider_with_1000_held_streams_does_not_slow_another(sim: Simulator, tmp_path: Path) -> None:
    """The issue's case, with the default pool (256 connections, 2 s wait) and no pool key at all:
    before, the 1,000 held streams took the one pool of 1,000, and the other provider got a 504
    after its connect timeout, naming it, and was ejected."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config(sim))
    sim.control(provider="toapis", stall_after=1)  # the first event, then silence until the client leaves
    with gateway_process(path, GATEWAY_SHUTDOWN_GRACE="5") as served, \
            httpx.Client(base_url=served.url, timeout=10) as http:
        assert timed(http, "glm-other")[1].status_code == 200  # a kept-alive connection, warmed up

        async def run() -> tuple[list[float], list[int], int, list[tuple[int, dict[str, str]]]]:
            async with held(served.url, "glm-stuck") as streams:
                await streams.open(1000)
                # the stuck provider's pool is full: another provider is as fast as ever, meanwhile
                await asyncio.to_thread(wait_until, lambda: len(sim.requests("toapis")) >= 256,
                                        what="the stuck pool full", timeout=20)
                reached = len(sim.requests("toapis"))
                took, statuses = [], []
                for _ in range(20):
                    seconds, response = await asyncio.to_thread(timed, http, "glm-other")
                    took.append(seconds)
                    statuses.append(response.status_code)
                heads = await streams.statuses(timeout=10)
                return took, statuses, max(reached, len(sim.requests("toapis"))), heads

        took, statuses, reached, heads = asyncio.run(run())
        assert statuses == [200] * 20 and max(took) < 0.2, took
        assert reached == 256, "no more than its pool reached the upstream"
        assert sorted(status for status, _ in heads) == [200] * 256 + [503] * 744
        refused = [headers for status, headers in heads if status == 503]
        assert all(h["retry-after"] == "1" and h["x-gateway-provider"] == "stuck" for h in refused)
        settled(served.url)
        samples = scrape(served.url)
        for provider in ("stuck", "other"):
            assert value(samples, "gateway_provider_up", provider=provider) == 1, provider
        assert value(samples, "gateway_upstream_attempts_total", provider="stuck", outcome="pool_exhausted") == 744
        assert value(samples, "gateway_requests_total", model="glm-stuck", provider="stuck", status="503",
                     code="pool_exhausted") == 744
        assert httpx.get(f"{served.url}/readyz").status_code == 200
        full = served.logged("pool_exhausted")
        assert full and all(line["provider"] == "stuck" and line["connections"] == 256 for line in full)
        assert len(full) <= 5, "one line a second, not one per refused attempt"


@pytest.fixture
def small_pool(sim: Simulator, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(sim, stuck="    pool: {connections: 20, wait: 0.5}\n"))
    with start_gateway(path, api_keys=CLIENT_KEY, admin_key="sk-admin", log_level="info") as url:
        yield url, path


def test_a_full_pool_falls_back_or_answers_503_and_never_ejects(sim: Simulator, small_pool: tuple[str, Path]) -> None:
    url, path = small_pool
    sim.control(provider="toapis", stall_after=1)
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(base_url=url, headers=auth, timeout=10) as http:

        async def run() -> None:
            streams = Held(url, "glm-stuck", auth)
            try:
                await streams.open(20)
                assert [s for s, _ in await streams.statuses(timeout=5)] == [200] * 20
                # no route left: 503 after the pool's wait, and not one more request upstream
                for _ in range(6):  # more than GATEWAY_EJECT_AFTER (5) in a row
                    seconds, response = await asyncio.to_thread(timed, http, "glm-stuck")
                    error = response.json()["error"]
                    assert response.status_code == 503 and error["code"] == "pool_exhausted", response.text
                    assert response.headers["retry-after"] == "1" and response.headers["x-gateway-provider"] == "stuck"
                    assert error["message"].startswith("stuck") and 0.45 <= seconds < 1.5, seconds
                # a route left: it answers, after the same wait
                seconds, response = await asyncio.to_thread(timed, http, "glm-stuck-pair")
                assert response.status_code == 200 and response.headers["x-gateway-provider"] == "backup"
                assert response.headers["x-gateway-attempts"] == "2" and seconds < 1.5
                assert len(sim.requests("toapis")) == 20 and len(sim.requests("siliconflow")) == 1
                samples = scrape(url)
                assert value(samples, "gateway_provider_up", provider="stuck") == 1
                assert value(samples, "gateway_upstream_attempts_total", provider="stuck",
                             outcome="pool_exhausted") == 7
                # a reload with one more connection: the 20 in flight keep their slots, one more gets in
                path.write_text(path.read_text().replace("connections: 20", "connections: 21"))
                reloaded = await asyncio.to_thread(http.post, "/admin/reload",
                                                   headers={"Authorization": "Bearer sk-admin"})
                assert reloaded.status_code == 200
                await streams.open(2)
                assert sorted(s for s, _ in await streams.statuses(timeout=5)) == [200, 503]
                assert len(sim.requests("toapis")) == 21
            finally:
                await streams.close()

        asyncio.run(run())
        settled(url)
        sim.reset()  # the stall is over: the pool is free again
        assert all(http.post("/v1/chat/completions", json={"model": "glm-stuck", "messages": [USER]}).status_code
                   == 200 for _ in range(3))


def test_slots_hand_over_in_order_and_survive_cancellation_and_resizing() -> None:
    """The counting itself, where its races are: a slot freed just as its waiter was cancelled or
    timed out must not be lost, nor counted twice."""
    async def run() -> None:
        slots = Slots(2)
        assert slots.take() and slots.take() and not slots.take()
        first = asyncio.ensure_future(slots.wait(5))
        second = asyncio.ensure_future(slots.wait(5))
        third = asyncio.ensure_future(slots.wait(0.05))
        await asyncio.sleep(0.01)
        assert len(slots.waiters) == 3
        slots.give_back()  # to the first in the queue; the count stays
        assert await first and slots.busy == 2 and not second.done()
        assert await third is False and len(slots.waiters) == 1  # timed out, out of the queue
        slots.give_back()
        second.cancel()  # cancelled once its slot was handed over: it is given back, not lost
        with pytest.raises(asyncio.CancelledError):
            await second
        assert slots.busy == 1 and not slots.waiters
        assert slots.take() and slots.busy == 2
        slots.give_back()
        slots.give_back()
        assert slots.busy == 0
        for _ in range(2):
            assert slots.take()
        slots.resize(1)  # shrunk under load: the two in use stay; the first back is not handed on
        waiter = asyncio.ensure_future(slots.wait(5))
        await asyncio.sleep(0)
        slots.give_back()
        assert slots.busy == 1 and not waiter.done()
        slots.resize(3)  # grown: the queue is served at once
        assert await waiter and slots.busy == 2
        assert slots.take() and not slots.take()

    asyncio.run(run())


def rss(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def ask(url: str, model: str, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": [USER], "stream": stream},
                      timeout=60)


def agree(served: Served, codes: list[str]) -> None:
    """The access log's request and attempt lines and /metrics tell the same story."""
    wait_until(lambda: len(served.logged("request")) >= len(codes) + 1, what="the request lines", log=served.lines)
    lines = served.logged("request")[1:]  # the warm-up first
    assert [(line["status"], line["error"]) for line in lines] == [(502, code) for code in codes]
    outcomes = [line["outcome"] for line in served.logged("attempt")[1:]]
    assert outcomes == codes, "one attempt each: the same answer would come again"
    samples = scrape(served.url)
    for code in set(codes):
        assert value(samples, "gateway_requests_total", model="glm-stuck", provider="stuck", status="502",
                     code=code) == codes.count(code)
        assert value(samples, "gateway_upstream_attempts_total", provider="stuck", outcome=code) == codes.count(code)


def test_a_gzip_bomb_and_a_100_mib_answer_leave_memory_alone(sim: Simulator, tmp_path: Path) -> None:
    """Before, aiohttp inflated the bomb (1 MiB to 1 GiB: 2.4 GB of RSS) and the whole body was
    read before parsing (100 MiB answered whole, with a 200)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config(sim))
    with gateway_process(path) as served:
        assert ask(served.url, "glm-stuck").status_code == 200  # warmed up: the baseline is a serving process
        before = rss(served.process.pid)["VmRSS"]
        codes = []
        sim.control(provider="toapis", gzip_bomb=1024, count=2)  # 1 MiB sent, 1 GiB inflated
        for stream in (False, True):
            started = time.monotonic()
            response = ask(served.url, "glm-stuck", stream)
            error = response.json()["error"]
            assert response.status_code == 502 and error["code"] == "upstream_encoding", response.text
            assert "gzip" in error["message"] and time.monotonic() - started < 5
            codes.append("upstream_encoding")
        sim.control(provider="toapis", answer_bytes=100 * MIB, count=1)
        response = ask(served.url, "glm-stuck")
        error = response.json()["error"]
        assert response.status_code == 502 and error["code"] == "upstream_too_large", response.text
        assert error["message"] == (f"stuck's answer is more than the {32 * MIB} bytes allowed "
                                    "(GATEWAY_MAX_UPSTREAM_BYTES)")  # cut while read: no Content-Length came
        codes.append("upstream_too_large")
        after = rss(served.process.pid)
        assert after["VmHWM"] - before < 100 * MIB, (before, after)
        agree(served, codes)
        assert value(scrape(served.url), "gateway_provider_up", provider="stuck") == 1  # 3 of 5 in a row


def test_a_content_length_past_the_limit_is_refused_before_reading(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(sim))
    with start_gateway(path, max_upstream_bytes=200) as url:
        response = ask(url, "glm-stuck")  # the simulator's answer, ~300 bytes, with its Content-Length
        error = response.json()["error"]
        assert response.status_code == 502 and error["code"] == "upstream_too_large"
        assert error["message"].startswith("stuck's answer is ") and "bytes, more than the 200" in error["message"]
        response = ask(url, "glm-stuck-pair")  # the next route: its answer is as large, and as refused
        assert response.status_code == 502 and response.headers["x-gateway-attempts"] == "2"
        assert ask(url, "glm-stuck", stream=True).status_code == 200  # streams are bounded per event instead


def test_an_encoded_error_keeps_its_status_and_asking_says_identity(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config(sim))
    with start_gateway(path) as url:
        sim.control(provider="toapis", gzip_bomb=0, status=429, retry_after=9, count=1)
        response = ask(url, "glm-stuck")
        assert response.status_code == 429 and response.headers["retry-after"] == "9"
        assert sim.last("toapis")["headers"]["accept-encoding"] == "identity"
        sim.control(provider="toapis", gzip_bomb=0, count=1)  # a plain gzip answer: refused, the next route
        response = ask(url, "glm-stuck-pair")
        assert response.status_code == 200 and response.headers["x-gateway-provider"] == "backup"
        assert response.headers["x-gateway-attempts"] == "2"  # not tried twice: the same answer would come
        assert len(sim.requests("toapis")) == 2 and len(sim.requests("siliconflow")) == 1
        samples = scrape(url)
        assert value(samples, "gateway_upstream_attempts_total", provider="stuck", outcome="upstream_encoding") == 1


GOOD = """
providers:
  a:
    profile: toapis
    base_url: http://127.0.0.1:1/v1
    api_key: k
    pool: {connections: 10, wait: 0.5}
  b:
    profile: maxtoken
    base_url: http://127.0.0.1:1/v1
    api_key: k
  off:
    profile: maxtoken
    base_url: http://127.0.0.1:1/v1
    api_key: ${TEST_UNSET_POOL_KEY}
    pool: {connections: 1000}
models:
  m:
    - {provider: a, model: x}
"""


def test_pool_config_and_the_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_UNSET_POOL_KEY", raising=False)
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD)
    config = load(path)
    assert (config.providers["a"].pool.connections, config.providers["a"].pool.wait) == (10, 0.5)
    assert (config.providers["b"].pool.connections, config.providers["b"].pool.wait) == (256, 2.0)
    assert config.upstream_connections == 10 + 256  # a disabled provider holds none


@pytest.mark.parametrize("pool, key, problem", [
    ("{connections: 0}", "providers.a.pool.connections", "expected a whole number of at least 1, got 0"),
    ("{connections: 2.5}", "providers.a.pool.connections", "expected a whole number of at least 1, got 2.5"),
    ("{connections: true}", "providers.a.pool.connections", "expected a whole number of at least 1, got True"),
    ("{wait: -1}", "providers.a.pool.wait", "expected a positive number of seconds, got -1"),
    ("{wait: .inf}", "providers.a.pool.wait", "expected a positive number of seconds, got inf"),
    ("{size: 3}", "providers.a.pool.size", "unknown; expected connections, wait"),
    ("5", "providers.a.pool", "expected a mapping, got int"),
])
def test_pool_config_errors_name_file_key_problem(tmp_path: Path, pool: str, key: str, problem: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD.replace("{connections: 10, wait: 0.5}", pool))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: {key}: {problem}"

