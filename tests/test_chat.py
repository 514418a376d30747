"""The conformance suite: the same chat, streaming or not, through the official SDK (sync and
async), over every provider; asserting what the upstream received and what the client got."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.conftest import (
    CLIENT_KEY,
    PROVIDERS,
    UPSTREAM_KEYS,
    UPSTREAM_MODEL,
    Simulator,
)

THINKERS = ["powertokens", "token360", "siliconflow"]  # the pages that document a thinking control
# Their examples reason when nothing is asked (powertokens.txt:13-41, siliconflow.txt:11-39): a
# client that says nothing gets reasoning_content, 4 more completion tokens ("Thinking about: ...").
UNASKED_REASONING = {"powertokens": 4, "siliconflow": 4}
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_json_answer_through_the_sync_sdk(client: openai.OpenAI, sim: Simulator, provider: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=f"glm-{provider}", messages=HELLO)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Echo: Hello there"
    assert answer.choices[0].finish_reason == "stop"
    reasoning = UNASKED_REASONING.get(provider, 0)
    assert answer.usage.prompt_tokens == 2 and answer.usage.completion_tokens == 3 + reasoning
    assert (answer.choices[0].message.model_extra.get("reasoning_content") is not None) == bool(reasoning)
    assert raw.headers["x-gateway-provider"] == provider
    sent = sim.last(provider)
    assert sent["body"]["model"] == UPSTREAM_MODEL[provider]
    assert sent["body"]["stream"] is False  # always explicit: powertokens streams when it is absent
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEYS[provider]}"
    assert CLIENT_KEY not in str(sent["headers"])
    assert sent["headers"]["x-request-id"] == raw.headers["x-request-id"]


@pytest.mark.anyio
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_streamed_answer_through_the_async_sdk(gateway: str, sim: Simulator, provider: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        stream = await client.chat.completions.create(model=f"glm-{provider}", messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: Hello there"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3  # one per word, as sent
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert sim.last(provider)["body"]["stream"] is True


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_stream_is_relayed_byte_for_byte(http: httpx.Client, sim: Simulator, provider: str) -> None:
    sim.control(split_writes=True, keepalive=True)
    body = {"model": f"glm-{provider}", "messages": HELLO, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        relayed = response.read()
    direct = httpx.post(f"{sim.url}/{provider}/v1/chat/completions", content=sim.last(provider)["raw"],
                        headers={"Authorization": f"Bearer {UPSTREAM_KEYS[provider]}",
                                 "Content-Type": "application/json"}).content
    def same(b: bytes) -> bytes:
        return re.sub(rb'"(id|created)":\s*("[^"]*"|\d+)', b"", b)
    assert same(relayed) == same(direct)
    assert b": keep-alive" in relayed and relayed.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_json_answer_comes_back_as_the_upstream_sent_it(http: httpx.Client, sim: Simulator, provider: str) -> None:
    relayed = http.post("/v1/chat/completions", json={"model": f"glm-{provider}", "messages": HELLO}).json()
    direct = httpx.post(f"{sim.url}/{provider}/v1/chat/completions", content=sim.last(provider)["raw"],
                        headers={"Authorization": f"Bearer {UPSTREAM_KEYS[provider]}",
                                 "Content-Type": "application/json"}).json()
    for answer in (relayed, direct):
        answer.pop("id"), answer.pop("created")
    assert relayed == direct


@pytest.mark.parametrize("provider", THINKERS)
@pytest.mark.parametrize("form", [{"reasoning_effort": "high"}, {"thinking": {"type": "enabled"}},
                                  {"enable_thinking": True}])
def test_reasoning_comes_back_for_every_thinking_form(http: httpx.Client, provider: str, form: dict) -> None:
    body = {"model": f"glm-{provider}", "messages": HELLO, **form}
    message = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Thinking about: Hello there"
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: {")]
    reasoning = "".join(re.findall(r'"reasoning_content":"([^"]*)"', "".join(events)))
    assert reasoning == "Thinking about: Hello there"


def test_siliconflow_usage_details_and_trace_header_come_back(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": "glm-siliconflow", "messages": HELLO,
                                                        "enable_thinking": True})
    usage = response.json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 4  # "Thinking about: Hello there"
    assert usage["prompt_cache_miss_tokens"] == 2 and "prompt_cache_hit_tokens" in usage
    assert response.headers["x-siliconcloud-trace-id"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_include_usage_gives_openais_final_usage_chunk(client: openai.OpenAI, sim: Simulator, provider: str) -> None:
    stream = client.chat.completions.create(model=f"glm-{provider}", messages=HELLO, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 5 + UNASKED_REASONING.get(provider, 0)
    assert all(c.usage is None for c in chunks[:-1])
    assert "stream_options" not in sim.last(provider)["body"]  # no page documents it
