"""The Messages front door (issue 12) through the official anthropic SDK, against the simulators:
every upstream, JSON and streamed, thinking, a tool loop, images, every error type, a client that
leaves mid-stream. Claude Code itself is in test_claude_code.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, PROVIDERS, Simulator
from tests.doors import ASK, THINKERS, TOOL_TAKERS, door_gateway, leave_mid_stream
from tests.test_metrics import scrape, value

TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def door(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    providers = ("  unset:\n    profile: toapis\n    base_url: http://127.0.0.1:9/v1\n"
                 "    api_key: ${TEST_UNSET_MESSAGES_KEY}\n")
    models = ("  glm-off:\n    - {provider: unset, model: glm-5}\n"
              "  claude-*:\n    - {provider: token360, model: glm-5.1}\n")
    with door_gateway(sim, tmp_path_factory, providers, models) as url:
        yield url


@pytest.fixture
def client(door: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=door, api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
        yield c


def user(text: str = "hi") -> dict:
    return {"role": "user", "content": text}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain_text_json_and_streamed_on_every_upstream(client: anthropic.Anthropic, sim: Simulator,
                                                         provider: str) -> None:
    answer = client.messages.create(model=f"glm-{provider}", max_tokens=200, system="be brief",
                                    messages=[user()], thinking={"type": "disabled"})
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text == "Echo: hi"
    assert answer.stop_reason == "end_turn" and answer.role == "assistant" and answer.model == f"glm-{provider}"
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens == 2
    assert sim.last(provider)["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    with client.messages.stream(model=f"glm-{provider}", max_tokens=200, messages=[user()],
                                thinking={"type": "disabled"}) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Echo: hi" and len(texts) >= 2  # as the upstream's deltas came, not at the end
    assert final.stop_reason == "end_turn"
    if provider != "token360":  # every upstream's usage reaches message_delta (token360's page has no stream usage)
        assert final.usage.output_tokens == 2


@pytest.mark.parametrize("provider", THINKERS)
@pytest.mark.parametrize("streamed", [False, True])
def test_thinking_comes_as_a_thinking_block_then_text(client: anthropic.Anthropic, sim: Simulator, provider: str,
                                                      streamed: bool) -> None:
    ask = {"model": f"glm-{provider}", "max_tokens": 500, "messages": [user("why")],
           "thinking": {"type": "enabled", "budget_tokens": 1024}}
    if streamed:
        with client.messages.stream(**ask) as stream:
            answer = stream.get_final_message()
    else:
        answer = client.messages.create(**ask)
    assert [b.type for b in answer.content] == ["thinking", "text"]
    assert answer.content[0].thinking == "Thinking about: why" and answer.content[0].signature
    assert answer.content[1].text == "Echo: why"


@pytest.mark.parametrize("provider", TOOL_TAKERS)
@pytest.mark.parametrize("streamed", [False, True])
def test_a_tool_loop_sends_the_thinking_back_byte_for_byte(client: anthropic.Anthropic, sim: Simulator,
                                                           provider: str, streamed: bool) -> None:
    ask = {"model": f"glm-{provider}", "max_tokens": 500, "tools": TOOLS, "messages": [user(ASK)]}
    if provider in THINKERS:
        ask["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    if streamed:
        with client.messages.stream(**ask) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(**ask)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"query": ASK}
    turn = [user(ASK), {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]}]
    second = client.messages.create(**{**ask, "messages": turn})
    assert second.content[-1].text == "Tool said: sunny, 21 C"
    sent = sim.last(provider)["body"]["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == call.id
    assert orjson.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"query": ASK}
    if provider in THINKERS:
        assert assistant["reasoning_content"] == first.content[0].thinking == f"Thinking about: {ASK}"
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}


def test_a_tool_result_to_an_upstream_without_the_tool_role_is_the_documented_limit(
        client: anthropic.Anthropic, sim: Simulator) -> None:
    turn = [user(ASK), {"role": "assistant", "content": [{"type": "tool_use", "id": "call_0", "name": "get_weather",
                                                          "input": {"query": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": "sunny"}]}]
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="glm-maxtoken", max_tokens=100, tools=TOOLS, messages=turn)
    error = raised.value.body["error"]
    assert error["type"] == "invalid_request_error" and "maxtoken" in error["message"]
    assert error["message"].startswith("messages[2].content[0]"), error["message"]
    assert sim.requests("maxtoken") == []


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="


def test_an_image_goes_to_a_route_that_takes_images_and_is_a_400_on_one_that_does_not(
        client: anthropic.Anthropic, sim: Simulator) -> None:
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
               {"type": "text", "text": "what is it?"}]
    answer = client.messages.create(model="glm-powertokens", max_tokens=100, messages=[{"role": "user",
                                                                                        "content": content}])
    assert answer.content[-1].text.startswith("Echo:")
    assert sim.last("powertokens")["body"]["messages"][0]["content"][0] == {
        "type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="glm-toapis", max_tokens=100, messages=[{"role": "user", "content": content}])
    assert "toapis" in raised.value.body["error"]["message"]
    assert raised.value.body["error"]["message"].startswith("messages[0].content")


def test_what_a_chat_upstream_cannot_do_is_dropped_and_named(door: str, sim: Simulator) -> None:
    body = {"model": "glm-toapis", "max_tokens": 50, "messages": [user()], "top_k": 5,
            "tools": [*TOOLS, {"type": "web_search_20250305", "name": "web_search"}],
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "container": "c", "context_management": {"edits": []}}
    response = httpx.post(f"{door}/v1/messages?beta=true", json=body,
                          headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01",
                                   "anthropic-beta": "claude-code-20250219"})
    assert response.status_code == 200, response.text
    dropped = response.headers["x-gateway-dropped"].split(",")
    assert {"cache_control", "tools.web_search_20250305", "container", "context_management", "top_k"} <= set(dropped)
    seen = sim.last("toapis")
    assert [t["function"]["name"] for t in seen["body"]["tools"]] == ["get_weather"]
    assert not {"container", "context_management", "top_k", "system"} & set(seen["body"])
    assert not any(h.startswith("anthropic") for h in seen["headers"])
    assert response.headers["request-id"] == response.headers["x-request-id"]


def test_a_claude_model_name_is_routed_by_its_pattern_and_echoed(client: anthropic.Anthropic, sim: Simulator) -> None:
    answer = client.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=[user()])
    assert answer.model == "claude-sonnet-4-5" and sim.last("token360")["body"]["model"] == "glm-5.1"


def raw_error(door: str, body: object, key: str = CLIENT_KEY, path: str = "/v1/messages") -> httpx.Response:
    return httpx.post(f"{door}{path}", content=orjson.dumps(body), timeout=20,
                      headers={"x-api-key": key, "content-type": "application/json"})


@pytest.mark.parametrize("case, status, kind", [
    ("no max_tokens", 400, "invalid_request_error"), ("a documented limit", 400, "invalid_request_error"),
    ("bad key", 401, "authentication_error"), ("unknown model", 404, "not_found_error"),
    ("too large", 413, "request_too_large"), ("rate limited", 429, "rate_limit_error"),
    ("upstream error", 502, "api_error"), ("no route", 503, "api_error"), ("timeout", 504, "timeout_error"),
    ("count_tokens", 404, "not_found_error"),
])
def test_every_error_comes_in_anthropics_envelope(door: str, sim: Simulator, case: str, status: int,
                                                  kind: str) -> None:
    ask = {"model": "glm-toapis", "max_tokens": 10, "messages": [user()]}
    key, path = CLIENT_KEY, "/v1/messages"
    if case == "no max_tokens":
        ask.pop("max_tokens")
    elif case == "a documented limit":
        ask = {**ask, "model": "glm-powertokens", "stop_sequences": ["a", "b"]}
    elif case == "bad key":
        key = "sk-wrong"
    elif case == "unknown model":
        ask["model"] = "gpt-4o"
    elif case == "too large":
        ask["messages"] = [user("x" * 70_000)]
    elif case == "rate limited":
        sim.control(provider="toapis", status=429, retry_after=1)
    elif case == "upstream error":
        sim.control(provider="toapis", status=500)
    elif case == "no route":
        ask["model"] = "glm-off"
    elif case == "timeout":
        sim.control(provider="toapis", ttfb_ms=2000)
        ask["model"] = "glm-impatient"
    elif case == "count_tokens":
        path = "/v1/messages/count_tokens"
    response = raw_error(door, ask, key, path)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"], body
    if case == "a documented limit":
        assert body["error"]["message"].startswith("stop_sequences has 2"), body
    if case == "rate limited":
        assert response.headers["retry-after"] == "1"


def test_the_sdk_raises_its_own_error_classes(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="gpt-4o", max_tokens=10, messages=[user()])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=str(client.base_url), api_key="sk-wrong", max_retries=0).messages.create(
            model="glm-toapis", max_tokens=10, messages=[user()])


def test_a_failure_mid_stream_is_an_error_event_and_the_sdk_raises(client: anthropic.Anthropic,
                                                                    sim: Simulator) -> None:
    sim.control(provider="toapis", reset_after=3, chunk_delay_ms=20, count=1)
    with pytest.raises(anthropic.APIStatusError) as raised, \
            client.messages.stream(model="glm-toapis", max_tokens=100, messages=[user("a b c d e")]) as stream:
        for _ in stream:
            pass
    assert "broke off" in str(raised.value)


def test_a_silent_stream_gets_pings(door: str, sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.doors import MESSAGES
    monkeypatch.setattr(MESSAGES, "ping_after", 0.2)
    sim.control(provider="toapis", chunk_delay_ms=700, words=3)
    with httpx.stream("POST", f"{door}/v1/messages", timeout=20, headers={"x-api-key": CLIENT_KEY},
                      json={"model": "glm-toapis", "max_tokens": 100, "messages": [user()], "stream": True}) as r:
        text = r.read().decode()
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and "ping" in names and names[-1] == "message_stop", names
    assert names.index("ping") > 0  # nothing, not even a ping, before the first upstream event


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_request(door: str, sim: Simulator) -> None:
    leave_mid_stream(sim, door, "/v1/messages", {"max_tokens": 500, "messages": [user()]},
                     {"x-api-key": CLIENT_KEY}, b"message_start")


def test_the_frontdoor_is_in_the_metrics_and_the_access_log(door: str, client: anthropic.Anthropic) -> None:
    before = value(scrape(door), "gateway_requests_total", model="glm-toapis", frontdoor="messages", code="ok")
    client.messages.create(model="glm-toapis", max_tokens=10, messages=[user()])
    assert value(scrape(door), "gateway_requests_total", model="glm-toapis", frontdoor="messages",
                 code="ok") == before + 1


def test_documents_go_only_to_a_route_that_takes_file_parts(client: anthropic.Anthropic, sim: Simulator,
                                                            tmp_path: Path) -> None:
    content = [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
               {"type": "text", "text": "summarise"}]
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="glm-token360", max_tokens=50, messages=[{"role": "user", "content": content}])
    assert "file" in raised.value.body["error"]["message"]


def test_budget_tokens_become_siliconflows_thinking_budget_checked_against_its_range(
        client: anthropic.Anthropic, sim: Simulator) -> None:
    client.messages.create(model="glm-siliconflow", max_tokens=500, messages=[user("why")],
                           thinking={"type": "enabled", "budget_tokens": 2048})
    sent = sim.last("siliconflow")["body"]
    assert sent["enable_thinking"] is True and sent["thinking_budget"] == 2048
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="glm-siliconflow", max_tokens=500, messages=[user("why")],
                               thinking={"type": "enabled", "budget_tokens": 100_000})
    message = raised.value.body["error"]["message"]
    assert message.startswith("thinking.budget_tokens 100000 is outside [128, 32768]") and "siliconflow" in message
