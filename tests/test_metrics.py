"""/metrics after real traffic: the counters and histograms move as the requests did, and say
what the clients saw (issue 9's five defects each have a test here)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.exchange import GAP_BOUNDS, Exchange
from gateway.metrics import _add, _observe, add_counts
from tests.conftest import CLIENT_KEY, Simulator, config_text, start_gateway
from tests.servers import serve
from tests.upstreams import Lingering

USER = {"role": "user", "content": "Hello there"}


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{base}/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (so a check that does not
    care about a label, such as ``frontdoor``, need not name it)."""
    wanted = frozenset(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


class Delta:
    def __init__(self, base: str) -> None:
        self.base, self.before = base, scrape(base)

    def __call__(self, name: str, **labels: str) -> float:
        return value(scrape(self.base), name, **labels) - value(self.before, name, **labels)


def test_a_json_request_moves_requests_latency_ttfb_and_tokens(gateway: str, http: httpx.Client) -> None:
    delta = Delta(gateway)
    assert http.post("/v1/chat/completions", json={"model": "glm-toapis", "messages": [USER]}).status_code == 200
    assert delta("gateway_requests_total", model="glm-toapis", provider="toapis", status="200", code="ok") == 1
    assert delta("gateway_request_duration_seconds_count", model="glm-toapis", provider="toapis", stream="false") == 1
    assert delta("gateway_overhead_seconds_count", phase="request") == 1
    assert delta("gateway_overhead_seconds_count", phase="response") == 1
    assert delta("gateway_upstream_ttfb_seconds_count", provider="toapis") == 1
    assert delta("gateway_tokens_total", model="glm-toapis", provider="toapis", kind="prompt") == 2
    assert delta("gateway_tokens_total", model="glm-toapis", provider="toapis", kind="completion") == 3
    assert delta("gateway_upstream_attempts_total", provider="toapis", outcome="ok") == 1


def test_a_thinking_stream_times_first_reasoning_and_first_content_apart(gateway: str, http: httpx.Client,
                                                                         sim: Simulator) -> None:
    sim.control(chunk_delay_ms=40)
    delta = Delta(gateway)
    body = {"model": "glm-siliconflow", "messages": [USER], "stream": True, "enable_thinking": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.read()
    labels = {"model": "glm-siliconflow", "provider": "siliconflow"}
    assert delta("gateway_time_to_first_token_seconds_count", **labels, kind="reasoning") == 1
    assert delta("gateway_time_to_first_token_seconds_count", **labels, kind="content") == 1
    reasoning = delta("gateway_time_to_first_token_seconds_sum", **labels, kind="reasoning")
    content = delta("gateway_time_to_first_token_seconds_sum", **labels, kind="content")
    assert content - reasoning > 0.1  # four reasoning deltas, 40 ms apart, come first
    assert delta("gateway_tokens_total", **labels, kind="reasoning") == 4
    gaps = delta("gateway_inter_token_seconds_count", **labels)
    assert gaps >= 4 and delta("gateway_inter_token_seconds_sum", **labels) / gaps > 0.02  # 40 ms apart
    assert delta("gateway_request_duration_seconds_count", **labels, stream="true") == 1


def test_rejections_failures_and_provider_health(gateway: str, http: httpx.Client, sim: Simulator) -> None:
    delta = Delta(gateway)
    http.post("/v1/chat/completions", json={"model": "glm-powertokens", "messages": [USER], "temperature": 3})
    http.post("/v1/chat/completions", json={"model": "glm-token360", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert delta("gateway_rejections_total", provider="powertokens", param="temperature") == 1
    assert delta("gateway_rejections_total", provider="token360", param="messages[].content") == 1
    assert delta("gateway_requests_total", model="glm-powertokens", provider="none", status="400",
                 code="unsupported_by_provider") == 1
    sim.control(provider="maxtoken", status=500, count=1)
    http.post("/v1/chat/completions", json={"model": "glm-maxtoken", "messages": [USER]})  # retried: 200
    assert delta("gateway_upstream_attempts_total", provider="maxtoken", outcome="upstream_error") == 1
    assert delta("gateway_upstream_attempts_total", provider="maxtoken", outcome="ok") == 1
    assert value(scrape(gateway), "gateway_provider_up", provider="maxtoken") == 1  # one failure is no outage


def test_provider_up_follows_ejection_and_never_a_rate_limit(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with start_gateway(path, eject_seconds=1.0) as url, httpx.Client(base_url=url, timeout=20) as http:
        def up() -> float:
            return value(scrape(url), "gateway_provider_up", provider="toapis")

        def ask() -> httpx.Response:
            return http.post("/v1/chat/completions", json={"model": "glm-toapis", "messages": [USER]})

        sim.control(provider="toapis", status=429, retry_after=9, count=8)
        assert [ask().status_code for _ in range(8)] == [429] * 8 and up() == 1  # rate limits are no outage
        sim.control(provider="toapis", status=503, count=4)
        assert ask().status_code == 502 and up() == 1  # three failed tries in a row: not yet
        assert ask().status_code == 200 and up() == 1  # the 4th fails, the 5th try answers: the count starts over
        sim.control(provider="toapis", status=503, count=6)
        assert ask().status_code == 502 and ask().status_code == 502
        assert up() == 0  # five in a row: ejected
        assert ask().status_code == 200 and up() == 1  # its only route is still tried (panic routing): back
        sim.control(provider="toapis", status=503, count=6)
        assert ask().status_code == 502 and ask().status_code == 502 and up() == 0
        time.sleep(1.2)
        assert up() == 1  # the cool-down is over


def test_labels_never_carry_a_client_string(gateway: str, http: httpx.Client) -> None:
    delta = Delta(gateway)
    http.post("/v1/chat/completions", json={"model": "made-up-<script>", "messages": [USER]})
    assert "made-up" not in httpx.get(f"{gateway}/metrics").text
    assert delta("gateway_requests_total", model="unknown", provider="none", status="404", code="model_not_found") == 1


def test_inflight_counts_open_streams(gateway: str, http: httpx.Client, sim: Simulator) -> None:
    sim.control(chunk_delay_ms=100, words=10)
    before = value(scrape(gateway), "gateway_inflight_requests")
    done = threading.Event()

    def stream() -> None:
        with http.stream("POST", "/v1/chat/completions",
                         json={"model": "glm-toapis", "messages": [USER], "stream": True}) as response:
            response.read()
        done.set()

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(0.3)
    assert value(scrape(gateway), "gateway_inflight_requests") == before + 1
    thread.join(10)
    assert done.is_set() and value(scrape(gateway), "gateway_inflight_requests") == before


@pytest.fixture(scope="module")
def lingering_gateway(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Lingering]]:
    """A gateway whose ``glm-lingering`` streams for 150 ms (the disconnect watcher is armed) and whose
    upstream ends its body 300 ms after [DONE] (the gateway is still reading it when the client has all)."""
    lingering = Lingering(before=0.15, after=0.3)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve(lingering))
        extra = f"  lingering:\n    profile: openai\n    base_url: {url}/v1\n    api_key: k\n"
        path = tmp_path_factory.mktemp("lingering") / "gateway.yaml"
        path.write_text(config_text(sim.url, extra, "  glm-lingering:\n    - {provider: lingering, model: m}\n"))
        yield stack.enter_context(start_gateway(path, api_keys=CLIENT_KEY, log_level="info")), lingering


def test_a_stream_read_to_its_end_is_a_200_not_a_499(lingering_gateway: tuple[str, Lingering],
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    """Defect 1: once the response is complete the server reports a disconnect; that is no 499,
    and the body end after [DONE] is still read, so the upstream connection is reused."""
    url, lingering = lingering_gateway
    delta = Delta(url)
    capfd.readouterr()
    with openai.OpenAI(base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        for _ in range(3):
            chunks = list(client.chat.completions.create(model="glm-lingering", messages=[USER], stream=True))
            assert chunks[0].choices[0].delta.content == "hi"
            time.sleep(0.5)  # the gateway reads the body end after the client has its answer
    assert delta("gateway_requests_total", model="glm-lingering", provider="lingering", status="200", code="ok") == 3
    assert delta("gateway_requests_total", model="glm-lingering", provider="lingering", status="499",
                 code="client_closed") == 0
    assert delta("gateway_upstream_attempts_total", provider="lingering", outcome="ok") == 3
    assert len(set(lingering.clients[-3:])) == 1, "the upstream connection was dropped, not reused"
    lines = [line for line in capfd.readouterr().out.splitlines() if '"glm-lingering"' in line]
    assert [('"status":200' in line) for line in lines[-3:]] == [True] * 3, lines


def test_a_refused_key_is_logged_too(lingering_gateway: tuple[str, Lingering],
                                     capfd: pytest.CaptureFixture[str]) -> None:
    url, _ = lingering_gateway
    capfd.readouterr()
    assert httpx.post(f"{url}/v1/chat/completions", json={"model": "glm-lingering", "messages": [USER]}).status_code \
        == 401
    time.sleep(0.3)  # request lines are flushed within 200 ms
    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if '"invalid_api_key"' in line]
    assert len(lines) == 1 and lines[0]["status"] == 401 and lines[0]["event"] == "request", lines


def test_a_refused_key_is_counted_and_logged(gateway: str) -> None:
    """Defect 2: the key check answers before the chat handler; its 401s still show."""
    delta = Delta(gateway)
    for headers in ({"Authorization": "Bearer sk-wrong"}, {}):
        response = httpx.post(f"{gateway}/v1/chat/completions", headers=headers,
                              json={"model": "glm-toapis", "messages": [USER]})
        assert response.status_code == 401
    assert delta("gateway_requests_total", model="unknown", provider="none", status="401",
                 code="invalid_api_key") == 2


def test_an_ill_typed_body_for_a_configured_alias_is_counted_as_that_alias(gateway: str, http: httpx.Client) -> None:
    """Defect 3: the alias is recorded as soon as the body says it."""
    delta = Delta(gateway)
    for bad in ({"messages": "hello"}, {"messages": [USER], "temperature": "hot"}, {"messages": [USER], "stream": 1}):
        assert http.post("/v1/chat/completions", json={"model": "glm-toapis", **bad}).status_code == 400
    assert delta("gateway_requests_total", model="glm-toapis", provider="none", status="400",
                 code="invalid_request") == 3
    assert delta("gateway_requests_total", model="unknown", provider="none", status="400",
                 code="invalid_request") == 0


def test_ttfb_is_timed_per_attempt_and_charged_to_its_own_provider(gateway: str, http: httpx.Client,
                                                                   sim: Simulator) -> None:
    """Defect 4: the failed first route's 300 ms is its own, and every attempt with headers counts."""
    sim.control(provider="maxtoken", status=503, ttfb_ms=300, count=3)  # each of its three tries
    delta = Delta(gateway)
    response = http.post("/v1/chat/completions", json={"model": "glm-fallback", "messages": [USER]})
    assert response.status_code == 200 and response.headers["x-gateway-provider"] == "token360"
    assert delta("gateway_upstream_ttfb_seconds_count", provider="maxtoken") == 3
    assert delta("gateway_upstream_ttfb_seconds_count", provider="token360") == 1
    assert delta("gateway_upstream_ttfb_seconds_sum", provider="maxtoken") >= 0.9
    assert delta("gateway_upstream_ttfb_seconds_sum", provider="token360") < 0.2
    assert delta("gateway_upstream_attempts_total", provider="maxtoken", outcome="upstream_error") == 3


def test_the_series_a_dashboard_needs_exist_at_zero_from_the_start(sim: Simulator, tmp_path: Path) -> None:
    """Defect 5: rate() and increase() see a series only from its second sample, so the first
    content filter, timeout or 200 must not be the one that creates it."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url, extra_models="  glm-fresh:\n    - {provider: maxtoken, model: glm-5-turbo}\n"))
    with start_gateway(path) as url:  # "glm-fresh" is in no other test's config
        samples = scrape(url)
        for outcome in ("ok", "content_filter", "upstream_timeout", "rate_limited", "upstream_error"):
            assert ("gateway_upstream_attempts_total", frozenset({("provider", "maxtoken"), ("outcome", outcome)})) \
                in samples, outcome
        for status, code in (("200", "ok"), ("400", "content_filter"), ("502", "upstream_error"),
                             ("504", "upstream_timeout"), ("429", "rate_limited"), ("499", "client_closed")):
            for door in ("chat", "messages"):
                labels = {"model": "glm-fresh", "provider": "maxtoken", "status": status, "code": code,
                          "frontdoor": door}
                assert ("gateway_requests_total", frozenset(labels.items())) in samples, labels
        labels = {"model": "unknown", "provider": "none", "status": "401", "code": "invalid_api_key",
                  "frontdoor": "messages"}
        assert ("gateway_requests_total", frozenset(labels.items())) in samples
        assert ("gateway_config_reloads_total", frozenset({("result", "failure")})) in samples
        assert value(samples, "gateway_config_loaded_timestamp_seconds") > time.time() - 60
        assert any(name == "gateway_build_info" for name, _ in samples)
        for stream in ("true", "false"):
            assert ("gateway_request_duration_seconds_count", frozenset(
                {"model": "glm-fresh", "provider": "maxtoken", "stream": stream}.items())) in samples


def test_a_reload_is_counted_and_creates_the_new_aliases_series(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(sim.url))
    with start_gateway(path, admin_key="sk-admin") as url:
        admin = {"Authorization": "Bearer sk-admin"}
        delta, loaded = Delta(url), value(scrape(url), "gateway_config_loaded_timestamp_seconds")
        time.sleep(0.01)
        path.write_text(config_text(sim.url, extra_models="  glm-reloaded:\n    - {provider: toapis, model: glm-5}\n"))
        assert httpx.post(f"{url}/admin/reload", headers=admin).status_code == 200
        path.write_text("providers: [broken\n")
        assert httpx.post(f"{url}/admin/reload", headers=admin).status_code == 400
        samples = scrape(url)
        assert delta("gateway_config_reloads_total", result="success") == 1
        assert delta("gateway_config_reloads_total", result="failure") == 1
        assert value(samples, "gateway_config_loaded_timestamp_seconds") > loaded
        labels = {"model": "glm-reloaded", "provider": "toapis", "status": "200", "code": "ok", "frontdoor": "chat"}
        assert ("gateway_requests_total", frozenset(labels.items())) in samples


def test_a_client_that_leaves_mid_stream_is_a_499(gateway: str, sim: Simulator) -> None:
    """The other side of defect 1: leaving before the last byte is still a 499."""
    sim.control(provider="toapis", chunk_delay_ms=100, words=30, count=1)
    delta = Delta(gateway)
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "glm-toapis", "messages": [USER], "stream": True}, timeout=10) as response:
        next(response.iter_raw())
    deadline = time.monotonic() + 5
    while delta("gateway_requests_total", model="glm-toapis", provider="toapis", status="200",
                code="client_closed") + delta("gateway_requests_total", model="glm-toapis", provider="toapis",
                                              status="499", code="client_closed") == 0:
        assert time.monotonic() < deadline, "the request that was left was never counted"
        time.sleep(0.05)
    assert delta("gateway_requests_total", model="glm-toapis", provider="toapis", status="200", code="ok") == 0
    assert delta("gateway_upstream_attempts_total", provider="toapis", outcome="client_closed") == 1


def test_binned_gaps_add_up_to_plain_observations() -> None:
    """The inter-token histogram takes a stream's gaps binned (one increment per bucket); the
    exposition must be what observing each gap gives, bucket edges included."""
    plain, binned = CollectorRegistry(), CollectorRegistry()
    by_one = Histogram("g", "g", buckets=GAP_BOUNDS, registry=plain)
    exchange = Exchange(request_id="x")
    for gap in [0.0, *GAP_BOUNDS, 61.0, 1e9, *(random.expovariate(30) for _ in range(300))]:
        by_one.observe(gap)
        exchange.gap(gap)
    assert exchange.gap_counts is not None
    add_counts(Histogram("g", "g", buckets=GAP_BOUNDS, registry=binned), exchange.gap_counts, exchange.gap_sum)

    def samples(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if line.startswith(("g_bucket",
                "g_count", "g_sum"))]
    assert samples(binned) == samples(plain)


def test_the_direct_writes_expose_what_the_public_methods_do() -> None:
    """Per request the metrics write to prometheus_client's values directly (metrics.py): a
    histogram's bucket edges, +Inf and the sum, a counter's and a gauge's value, must read the same."""
    plain, direct = CollectorRegistry(), CollectorRegistry()
    bounds = (0.005, 0.01, 0.1, 1, 10)
    families = [(Histogram("h", "h", buckets=bounds, registry=r), Counter("c", "c", registry=r),
                 Gauge("i", "i", registry=r)) for r in (plain, direct)]
    (histogram, counter, gauge), (histogram2, counter2, gauge2) = families
    for value in [0.0, *bounds, 11.0, 1e9, *(random.expovariate(3) for _ in range(200))]:
        histogram.observe(value)
        _observe(histogram2, value)
        counter.inc(value)
        _add(counter2, value)
        gauge.inc()
        gauge.dec(0.5)
        _add(gauge2, 1)
        _add(gauge2, -0.5)

    def samples(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines()
                if not line.startswith("#") and "_created" not in line]
    assert samples(direct) == samples(plain)
