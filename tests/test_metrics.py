"""/metrics after real traffic: the counters and histograms move as the requests did."""

from __future__ import annotations

import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Simulator

USER = {"role": "user", "content": "Hello there"}


def scrape(base: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{base}/metrics").text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Delta:
    def __init__(self, base: str) -> None:
        self.base, self.before = base, scrape(base)

    def __call__(self, name: str, **labels: str) -> float:
        return value(scrape(self.base), name, **labels) - value(self.before, name, **labels)


def test_a_json_request_moves_requests_latency_ttfb_and_tokens(gateway: str, http: httpx.Client) -> None:
    delta = Delta(gateway)
    assert http.post("/v1/chat/completions", json={"model": "glm-toapis", "messages": [USER]}).status_code == 200
    assert delta("gateway_requests_total", model="glm-toapis", provider="toapis", status="200") == 1
    assert delta("gateway_request_duration_seconds_count", model="glm-toapis", provider="toapis") == 1
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


def test_rejections_failures_and_provider_health(gateway: str, http: httpx.Client, sim: Simulator) -> None:
    delta = Delta(gateway)
    http.post("/v1/chat/completions", json={"model": "glm-powertokens", "messages": [USER], "temperature": 3})
    http.post("/v1/chat/completions", json={"model": "glm-token360", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert delta("gateway_rejections_total", provider="powertokens", param="temperature") == 1
    assert delta("gateway_rejections_total", provider="token360", param="messages[].content") == 1
    assert delta("gateway_requests_total", model="glm-powertokens", provider="none", status="400") == 1
    sim.control(provider="maxtoken", status=500, count=1)
    http.post("/v1/chat/completions", json={"model": "glm-maxtoken", "messages": [USER]})
    assert delta("gateway_upstream_attempts_total", provider="maxtoken", outcome="upstream_error") == 1
    assert value(scrape(gateway), "gateway_provider_up", provider="maxtoken") == 0
    http.post("/v1/chat/completions", json={"model": "glm-maxtoken", "messages": [USER]})
    assert value(scrape(gateway), "gateway_provider_up", provider="maxtoken") == 1


def test_labels_never_carry_a_client_string(gateway: str, http: httpx.Client) -> None:
    http.post("/v1/chat/completions", json={"model": "made-up-<script>", "messages": [USER]})
    text = httpx.get(f"{gateway}/metrics").text
    assert "made-up" not in text and 'model="unknown"' in text


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
