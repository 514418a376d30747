"""What the front doors' tests share: which upstreams take a tool turn or reason, and gateways
made for them (one for a door's error cases, one per upstream for a real client)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEY, UPSTREAM_KEYS, UPSTREAM_MODEL, Simulator, config_text, start_gateway
from tests.servers import SERVERS
from tests.test_metrics import scrape, value

ASK = "Please call get_weather for Paris"
TOOL_TAKERS = ["powertokens", "token360", "siliconflow", "toapis"]  # maxtoken's roles have no tool
# asked for thinking in their own dialect, these reason (the simulator, from their pages)
THINKERS = ["powertokens", "token360", "siliconflow"]


@contextlib.contextmanager
def door_gateway(sim: Simulator, factory: pytest.TempPathFactory, providers: str = "",
                 models: str = "") -> Iterator[str]:
    """The test table, plus ``glm-impatient`` (toapis, half a second to its first byte, no retry)
    and a 64 KiB body limit: every error a door can meet is a request away."""
    extra = (f"  impatient:\n    profile: toapis\n    base_url: {sim.url}/toapis/v1\n"
             f"    api_key: {UPSTREAM_KEYS['toapis']}\n    timeout: {{first_byte: 0.5, read: 0.5}}\n"
             f"    retry: {{attempts: 1}}\n{providers}")
    path = factory.mktemp("door") / "gateway.yaml"
    path.write_text(config_text(sim.url, extra, "  glm-impatient:\n    - {provider: impatient, model: glm-5}\n"
                                + models))
    with start_gateway(path, api_keys=CLIENT_KEY, max_body_bytes=64 * 1024) as url:
        yield url


@contextlib.contextmanager
def gateway_per_upstream(sim: Simulator, factory: pytest.TempPathFactory, alias: str) -> Iterator[dict[str, str]]:
    """One gateway per tool-taking upstream, ``alias`` routed to it: a real client's model name."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for provider in TOOL_TAKERS:
            path = factory.mktemp(provider) / "gateway.yaml"
            path.write_text(config_text(sim.url, extra_models=(
                f"  {alias}:\n    - {{provider: {provider}, model: {UPSTREAM_MODEL[provider]}}}\n")))
            urls[provider] = stack.enter_context(start_gateway(path, api_keys=CLIENT_KEY))
        yield urls


def leave_mid_stream(sim: Simulator, door: str, path: str, body: dict[str, Any], headers: dict[str, str],
                     first: bytes) -> None:
    """Read a long stream's first bytes (``first`` among them), hang up, and see the upstream
    request cancelled and counted as a 499 of the door."""
    sim.control(provider="toapis", chunk_delay_ms=100, words=100)
    with httpx.stream("POST", f"{door}{path}", timeout=20, headers=headers,
                      json={"model": "glm-toapis", "stream": True, **body}) as response:
        chunks = response.iter_raw()
        assert first in next(chunks)
    deadline = time.monotonic() + 3
    while SERVERS[sim.url].server_state.tasks or value(scrape(door), "gateway_inflight_requests"):
        assert time.monotonic() < deadline, "the upstream request was left running"
        time.sleep(0.05)
    assert value(scrape(door), "gateway_requests_total", model="glm-toapis", status="499",
                 frontdoor=path.rsplit("/", 1)[-1]) == 1
