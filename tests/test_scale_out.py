"""Issue 14, "Prove it": three `gateway serve` processes behind nginx (round robin) and one Redis,
all real, on loopback. A key's limits and budget hold across the three, a provider one replica
ejects is skipped by the others, a Redis that dies is served through (or refused, fail closed) and
picked up again when it is back, and a reload applies on every replica."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.conftest import Simulator, config_text
from tests.redis_server import free_port, redis_server
from tests.replicas import Replicas, replicas
from tests.test_metrics import scrape, value
from tests.test_operate import gateway_process, wait_until

USER = {"role": "user", "content": "Hello there"}
KEYS = """keys:
  paced:
    key: sk-paced
    limits: {requests_per_minute: 100}
  budgeted:
    key: sk-budgeted
    budget: {tokens_per_day: 100}
  narrow:
    key: sk-narrow
    limits: {max_concurrent: 2}
  few:
    key: sk-few
    limits: {requests_per_minute: 5}
"""


def chat(url: str, key: str, model: str = "glm-toapis", **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [USER], **extra}, timeout=20)


@pytest.fixture
def config(sim: Simulator, tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url) + KEYS)
    return path


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis of each test's own: the keys' counts of one test must not be the next one's."""
    with redis_server() as url:
        yield url


@pytest.fixture
def three(config: Path, redis_url: str, tmp_path: Path) -> Iterator[Replicas]:
    with replicas(config, 3, tmp_path / "nginx", GATEWAY_REDIS_URL=redis_url, GATEWAY_EJECT_AFTER="2") as running:
        yield running


def test_a_limit_of_100_a_minute_holds_across_three_replicas(three: Replicas) -> None:
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: chat(three.url, "sk-paced").status_code, range(300)))
    assert set(statuses) <= {200, 429}
    assert 98 <= statuses.count(200) <= 102, statuses.count(200)
    served = [value(scrape(s.url), "gateway_key_requests_total", key="paced", status="200") for s in three.served]
    assert sum(served) == statuses.count(200) and all(n > 0 for n in served), served  # all three took part


def test_a_token_budget_stops_all_three_within_one_requests_tokens(three: Replicas) -> None:
    def one(_: int) -> httpx.Response:
        return chat(three.url, "sk-budgeted", max_tokens=50)  # admitted on 50, each uses far fewer
    with ThreadPoolExecutor(6) as pool:  # at once, on all three: estimates of those running count too
        answers = list(pool.map(one, range(60)))
    for _ in range(40):  # then one at a time, until the budget is spent
        answers.append(one(0))
        if answers[-1].status_code == 429:
            break
    used = [a.json()["usage"]["total_tokens"] for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(a.json()["error"]["code"] == "budget_exceeded" for a in refused)
    assert 100 <= sum(used) <= 100 + max(used), (sum(used), used)


def test_max_concurrent_holds_across_replicas(three: Replicas, sim: Simulator) -> None:
    sim.control(provider="toapis", chunk_delay_ms=100, words=30)
    streams, readers = [], []
    try:
        for replica in three.served[:2]:  # one stream on each of two replicas
            streams.append(httpx.stream("POST", f"{replica.url}/v1/chat/completions", timeout=20,
                                        headers={"Authorization": "Bearer sk-narrow"},
                                        json={"model": "glm-toapis", "messages": [USER], "stream": True}))
            response = streams[-1].__enter__()
            assert response.status_code == 200
            readers.append(response.iter_raw())  # kept: a dropped iterator closes the stream
            next(readers[-1])
        third = chat(three.served[2].url, "sk-narrow")
        assert third.status_code == 429 and "2 requests at once" in third.json()["error"]["message"]
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
    wait_until(lambda: chat(three.served[2].url, "sk-narrow").status_code == 200, what="the leases to end")


def test_a_provider_one_replica_ejected_is_skipped_by_the_others(three: Replicas, sim: Simulator) -> None:
    sim.control(provider="maxtoken", status=500)
    for _ in range(3):  # glm-fallback: maxtoken first, then token360; two failures eject maxtoken
        assert chat(three.served[0].url, "sk-paced", model="glm-fallback").status_code == 200
    assert value(scrape(three.served[0].url), "gateway_provider_up", provider="maxtoken") == 0
    sim.reset()  # maxtoken is fine again, but the others must not try it before its cool-down ends
    for replica in three.served[1:]:
        wait_until(lambda r=replica: value(scrape(r.url), "gateway_provider_up", provider="maxtoken") == 0,
                   what="the ejection to reach the other replicas", timeout=5)
        assert chat(replica.url, "sk-paced", model="glm-fallback").status_code == 200
    assert not sim.requests("maxtoken"), "a replica tried the provider another had ejected"


def test_redis_down_is_served_through_then_picked_up_again(config: Path, tmp_path: Path) -> None:
    port = free_port()
    redis = ExitStack()
    url = redis.enter_context(redis_server(port))
    try:
        with replicas(config, 3, tmp_path / "nginx", GATEWAY_REDIS_URL=url) as running:
            assert [chat(running.url, "sk-few").status_code for _ in range(6)] == [200] * 5 + [429]
            redis.close()  # Redis dies mid-run
            started = time.monotonic()
            assert [chat(running.url, "sk-paced").status_code for _ in range(9)] == [200] * 9  # fail open
            assert time.monotonic() - started < 5, "a request waited on the dead Redis"
            for replica in running.served:
                assert value(scrape(replica.url), "gateway_shared_state_up") == 0
                wait_until(lambda r=replica: r.logged("shared_state_down"), what="the log line", log=replica.lines)
            redis = ExitStack()
            redis.enter_context(redis_server(port))  # back, empty
            for replica in running.served:
                wait_until(lambda r=replica: value(scrape(r.url), "gateway_shared_state_up") == 1,
                           what="the shared state to be picked up again", timeout=5, log=replica.lines)
            # shared again: the new Redis counts for all three
            assert [chat(running.url, "sk-few").status_code for _ in range(6)] == [200] * 5 + [429]
    finally:
        redis.close()


def test_fail_closed_answers_503_for_a_limited_key(config: Path) -> None:
    port = free_port()  # nothing listens here
    with gateway_process(config, GATEWAY_REDIS_URL=f"redis://127.0.0.1:{port}/0", GATEWAY_REDIS_FAIL="closed",
                         GATEWAY_API_KEYS="sk-env") as served:
        started = time.monotonic()
        refused = chat(served.url, "sk-few")
        assert time.monotonic() - started < 2
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shared_state_unavailable"
        assert chat(served.url, "sk-env").status_code == 200  # a key without limits needs no shared count


def test_a_reload_applies_to_the_next_request_on_every_replica(config: Path, redis_url: str, tmp_path: Path) -> None:
    with replicas(config, 3, tmp_path / "nginx", GATEWAY_REDIS_URL=redis_url, GATEWAY_ADMIN_KEY="sk-admin") as running:
        assert {chat(r.url, "sk-few").headers["x-ratelimit-limit-requests"] for r in running.served} == {"5"}
        config.write_text(config.read_text().replace("requests_per_minute: 5}", "requests_per_minute: 7}"))
        for replica in running.served:
            reloaded = httpx.post(f"{replica.url}/admin/reload", headers={"Authorization": "Bearer sk-admin"})
            assert reloaded.status_code == 200, reloaded.text
        answers = [chat(r.url, "sk-few") for r in running.served]
        assert [a.headers["x-ratelimit-limit-requests"] for a in answers] == ["7", "7", "7"]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["3", "2", "1"]  # one count
