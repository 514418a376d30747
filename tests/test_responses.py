"""The Responses front door (issue 13) through the official openai SDK (``client.responses``),
against the simulators: every upstream, JSON and streamed, reasoning, a function-call loop by
``store: false`` and by ``previous_response_id``, namespace tools, structured output, hosted tools
dropped, every error, a client leaving mid-stream. Codex CLI itself is in test_codex.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEY, PROVIDERS, Simulator
from tests.doors import ASK, THINKERS, TOOL_TAKERS, door_gateway, leave_mid_stream

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def door(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with door_gateway(sim, tmp_path_factory) as url:
        yield url


@pytest.fixture
def client(door: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{door}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20) as c:
        yield c


def create(client: openai.OpenAI, streamed: bool, **ask: Any) -> Any:
    if not streamed:
        return client.responses.create(**ask)
    with client.responses.stream(**ask) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text  # the text came as deltas, as the upstream sent it
    return final


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True])
def test_plain_text_with_instructions_on_every_upstream(client: openai.OpenAI, sim: Simulator, provider: str,
                                                        streamed: bool) -> None:
    answer = create(client, streamed, model=f"glm-{provider}", input="hi", instructions="be brief",
                    reasoning={"effort": "none"})
    assert answer.output_text == "Echo: hi" and answer.status == "completed" and answer.id.startswith("resp_")
    assert [o.type for o in answer.output] == ["message"]
    assert answer.usage.output_tokens == 2 or (streamed and provider == "token360")
    assert sim.last(provider)["body"]["messages"] == [{"role": "system", "content": "be brief"},
                                                      {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("provider", THINKERS)
@pytest.mark.parametrize("streamed", [False, True])
def test_effort_high_gives_a_reasoning_item_then_text(client: openai.OpenAI, sim: Simulator, provider: str,
                                                      streamed: bool) -> None:
    answer = create(client, streamed, model=f"glm-{provider}", input="why", reasoning={"effort": "high"})
    assert [o.type for o in answer.output] == ["reasoning", "message"]
    assert answer.output[0].content[0].text == "Thinking about: why" and answer.output_text == "Echo: why"


def loop_turn(first: Any) -> list[Any]:
    call = next(o for o in first.output if o.type == "function_call")
    return [{"role": "user", "content": ASK}, *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}]


@pytest.mark.parametrize("provider", TOOL_TAKERS)
@pytest.mark.parametrize("streamed", [False, True])
def test_a_function_call_loop_without_storage_sends_the_reasoning_back_byte_for_byte(
        client: openai.OpenAI, sim: Simulator, provider: str, streamed: bool) -> None:
    ask = {"model": f"glm-{provider}", "tools": TOOLS, "store": False, "include": ["reasoning.encrypted_content"],
           "reasoning": {"effort": "high" if provider in THINKERS else "none"}}
    first = create(client, streamed, input=ASK, **ask)
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"query": ASK}
    second = create(client, streamed, input=loop_turn(first), **ask)
    assert second.output_text.startswith("Tool said: sunny, 21 C")
    sent = sim.last(provider)["body"]["messages"]
    assistant = next(m for m in sent if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == call.call_id
    if provider in THINKERS:
        assert first.output[0].encrypted_content.startswith("glmgw.v1.")
        assert assistant["reasoning_content"] == first.output[0].content[0].text == f"Thinking about: {ASK}"
    assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 C"}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)  # store: false kept nothing


@pytest.mark.parametrize("provider", TOOL_TAKERS)
def test_the_same_loop_by_previous_response_id(client: openai.OpenAI, sim: Simulator, provider: str) -> None:
    ask = {"model": f"glm-{provider}", "tools": TOOLS, "reasoning": {"effort": "high" if provider in THINKERS
                                                                      else "none"}}
    first = client.responses.create(input=ASK, **ask)
    call = first.output[-1]
    assert client.responses.retrieve(first.id).output[-1].call_id == call.call_id
    second = client.responses.create(previous_response_id=first.id, **ask,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": "sunny, 21 C"}])
    assert second.output_text.startswith("Tool said: sunny, 21 C")
    sent = sim.last(provider)["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    if provider in THINKERS:
        assert sent[1]["reasoning_content"] == f"Thinking about: {ASK}"
    client.responses.delete(first.id)
    with pytest.raises(openai.BadRequestError, match="unknown or has expired"):
        client.responses.create(previous_response_id=first.id, input="more", model=f"glm-{provider}")


def test_a_function_call_output_to_an_upstream_without_the_tool_role_is_the_documented_limit(
        client: openai.OpenAI, sim: Simulator) -> None:
    items = [{"role": "user", "content": ASK},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="glm-maxtoken", input=items, tools=TOOLS)
    error = raised.value.body
    assert error["param"] == "input[2].role" and error["message"].startswith("input[2].role"), error
    assert "maxtoken" in error["message"] and sim.requests("maxtoken") == []


def test_namespace_tools_are_flattened_upstream_and_come_back_with_their_namespace(
        client: openai.OpenAI, sim: Simulator) -> None:
    tools = [{"type": "namespace", "name": "multi_agent_v1", "description": "agents",
              "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}]}]
    answer = client.responses.create(model="glm-toapis", input="please spawn_agent", tools=tools,
                                     tool_choice="required")
    sent = sim.last("toapis")["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["multi_agent_v1__spawn_agent"]
    call = answer.output[-1]
    assert call.name == "spawn_agent" and call.namespace == "multi_agent_v1"


def test_structured_output_becomes_response_format(client: openai.OpenAI, sim: Simulator) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    client.responses.create(model="glm-toapis", input="hi",
                            text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}})
    assert sim.last("toapis")["body"]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}}


def test_hosted_tools_and_bookkeeping_fields_never_go_upstream(door: str, sim: Simulator) -> None:
    body = {"model": "glm-toapis", "input": "hi", "tools": [*TOOLS, {"type": "web_search"}, {"type": "mcp"}],
            "store": False, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "user": "u",
            "metadata": {"a": "b"}, "client_metadata": {"x": 1}, "truncation": "auto", "service_tier": "auto",
            "text": {"verbosity": "low"}}
    response = httpx.post(f"{door}/v1/responses", json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == 200, response.text
    assert {"tools.web_search", "tools.mcp", "text.verbosity"} <= set(response.headers["x-gateway-dropped"].split(","))
    sent = sim.last("toapis")["body"]
    assert not {"store", "include", "prompt_cache_key", "user", "metadata", "client_metadata", "truncation",
                "service_tier", "text", "input"} & set(sent)
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]


@pytest.mark.parametrize("case, status", [
    ("a documented limit", 400), ("background", 400), ("bad key", 401), ("unknown model", 404), ("too large", 413),
    ("rate limited", 429), ("upstream error", 502), ("timeout", 504),
])
def test_errors_before_the_stream_are_the_chat_routes(door: str, sim: Simulator, case: str, status: int) -> None:
    ask: dict[str, Any] = {"model": "glm-toapis", "input": "hi"}
    key = CLIENT_KEY
    if case == "a documented limit":
        ask = {"model": "glm-powertokens", "input": "hi", "max_output_tokens": 10_000_000}
    elif case == "background":
        ask["background"] = True
    elif case == "bad key":
        key = "sk-wrong"
    elif case == "unknown model":
        ask["model"] = "gpt-4o"
    elif case == "too large":
        ask["input"] = "x" * 70_000
    elif case == "rate limited":
        sim.control(provider="toapis", status=429, retry_after=1)
    elif case == "upstream error":
        sim.control(provider="toapis", status=500)
    elif case == "timeout":
        sim.control(provider="toapis", ttfb_ms=2000)
        ask["model"] = "glm-impatient"
    response = httpx.post(f"{door}/v1/responses", json=ask, headers={"Authorization": f"Bearer {key}"}, timeout=20)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if case == "a documented limit":
        assert error["param"] == "max_output_tokens" and error["message"].startswith("max_output_tokens 10000000")


def test_a_failure_mid_stream_is_response_failed(client: openai.OpenAI, sim: Simulator) -> None:
    sim.control(provider="toapis", reset_after=3, chunk_delay_ms=20, count=1)
    with client.responses.stream(model="glm-toapis", input="a b c d e") as stream:
        events = list(stream)
    assert events[-1].type == "response.failed" and "broke off" in events[-1].response.error.message
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(numbers)))


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_request(door: str, sim: Simulator) -> None:
    leave_mid_stream(sim, door, "/v1/responses", {"input": "hi"}, {"Authorization": f"Bearer {CLIENT_KEY}"},
                     b"response.created")


@pytest.mark.parametrize("streamed", [False, True])
def test_an_answer_cut_by_max_output_tokens_is_incomplete(client: openai.OpenAI, streamed: bool) -> None:
    ask = {"model": "glm-toapis", "input": "one two three four five six", "max_output_tokens": 3}
    if streamed:  # the SDK's get_final_response() waits for response.completed only: the API sends this
        with client.responses.stream(**ask) as stream:
            last = list(stream)[-1]
        assert last.type == "response.incomplete"
        answer = last.response
    else:
        answer = client.responses.create(**ask)
    assert answer.status == "incomplete" and answer.incomplete_details.reason == "max_output_tokens"
    assert answer.output_text == "Echo: one two"


@pytest.mark.anyio
async def test_the_store_keeps_responses_for_their_ttl_within_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.doors import responses_store
    from gateway.doors.responses_store import ResponseStore, made_here, new_response_id

    now = [1000.0]
    monkeypatch.setattr(responses_store.time, "monotonic", lambda: now[0])
    store = ResponseStore(max_count=3, max_bytes=2000)
    ids = [new_response_id() for _ in range(5)]
    for response_id in ids[:4]:
        await store.put_response(response_id, "app", b'{"id": 1}', b"[]", ttl=10)
    assert await store.get_response(ids[0], "app") is None  # count: the oldest out
    assert await store.get_response(ids[1], "app") == (b'{"id": 1}', b"[]")
    assert await store.get_response(ids[1], "other-app") is None  # another key's: not there for it
    assert await store.delete_response(ids[1], "other-app") is False
    await store.put_response(ids[4], "app", b"{}", b"x" * 1500, ttl=10)  # bytes: the oldest make room
    assert await store.get_response(ids[4], "app") is not None and await store.get_response(ids[1], "app") is None
    now[0] += 11
    assert await store.get_response(ids[4], "app") is None  # expired
    assert await store.delete_response(ids[4], "app") is False
    await store.put_response("resp_big", "app", b"{}", b"y" * 3000, ttl=10)  # larger than the store: not kept
    assert await store.get_response("resp_big", "app") is None
    assert made_here(ids[0]) and not made_here("resp_1_abc") and not made_here("resp_nonsense")
