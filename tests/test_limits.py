"""Documented limits: a request that breaks one is a 400 naming param, provider and limit, and
nothing reaches the upstream; a route that cannot take a request is skipped for the next one."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from gateway.request import MAX_DEPTH
from tests.conftest import Simulator

USER = {"role": "user", "content": "hi"}
IMAGE = {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}

# provider, extra body, param, words the message must contain
BREACHES: list[tuple[str, dict[str, Any], str, str]] = [
    ("powertokens", {"temperature": 1.5}, "temperature", "temperature 1.5 is outside [0, 1] for powertokens"),
    ("powertokens", {"top_p": 0.001}, "top_p", "top_p 0.001 is outside [0.01, 1] for powertokens"),
    ("powertokens", {"max_tokens": 200000}, "max_tokens", "max_tokens 200000 is outside [1, 131072]"),
    ("powertokens", {"max_completion_tokens": 0}, "max_completion_tokens",
     "max_completion_tokens 0 is outside [1, 131072]"),
    ("powertokens", {"stop": ["a", "b"]}, "stop", "stop has 2 sequences, more than the 1 allowed for powertokens"),
    ("powertokens", {"messages": [{"role": "system", "content": "s"}]}, "messages", "not system or assistant"),
    ("powertokens", {"tools": [TOOL] * 129}, "tools", "tools has 129 items, more than 128"),
    ("powertokens", {"tools": [{"type": "web_search", "web_search": {}}]}, "tools[0].type", "not one of function"),
    ("powertokens", {"tools": [TOOL], "tool_choice": "required"}, "tool_choice",
     "tool_choice 'required' is not one of auto"),
    ("powertokens", {"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
     "messages[0].content", "content part 'file' is not accepted"),
    ("token360", {"messages": [IMAGE]}, "messages[0].content", "content part 'image_url' is not accepted"),
    ("token360", {"messages": [USER, {"role": "tool", "content": "42"}]}, "messages[1].tool_call_id",
     "a tool message needs a tool_call_id for token360"),
    ("token360", {"messages": [{"role": "function", "content": "x"}]}, "messages[0].role", "role 'function'"),
    ("siliconflow", {"messages": [USER] * 11}, "messages", "messages has 11 items, more than 10 for siliconflow"),
    ("siliconflow", {"thinking_budget": 100, "enable_thinking": True}, "thinking_budget",
     "thinking_budget 100 is outside [128, 32768]"),
    ("siliconflow", {"min_p": 1.5}, "min_p", "min_p 1.5 is outside [0, 1]"),
    ("siliconflow", {"stop": ["a", "b", "c", "d", "e"]}, "stop", "more than the 4 allowed"),
    ("siliconflow", {"tools": [{"type": "retrieval"}]}, "tools[0].type", "not one of function"),
    ("toapis", {"temperature": 2.5}, "temperature", "temperature 2.5 is outside [0, 2] for toapis"),
    ("toapis", {"top_p": 1.2}, "top_p", "top_p 1.2 is outside [0, 1]"),
    ("toapis", {"messages": [IMAGE]}, "messages[0].content", "content part 'image_url' is not accepted"),
    ("toapis", {"stop": ["a", "b", "c", "d", "e"]}, "stop", "more than the 4 allowed for toapis"),
    ("maxtoken", {"temperature": 1.01}, "temperature", "outside [0, 1] for maxtoken"),
    ("maxtoken", {"messages": [USER, {"role": "tool", "tool_call_id": "c", "content": "42"}]},
     "messages[1].role", "role 'tool' is not one of assistant, system, user for maxtoken"),
    ("maxtoken", {"stop": ["a", "b", "c", "d", "e"]}, "stop", "more than the 4 allowed"),
]


@pytest.mark.parametrize("provider, extra, param, words", BREACHES)
def test_a_breach_is_a_400_naming_param_provider_and_limit(
        http: httpx.Client, sim: Simulator, provider: str, extra: dict, param: str, words: str) -> None:
    body = {"model": f"glm-{provider}", "messages": [USER], **extra}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == "unsupported_by_provider"
    assert words in error["message"]
    assert f"{provider}.txt:" in error["message"]  # the doc line the limit comes from
    assert sim.requests() == []


def test_the_sdk_raises_a_bad_request_with_the_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="glm-powertokens", messages=[USER], temperature=1.5)
    assert "temperature 1.5 is outside [0, 1] for powertokens" in str(info.value)


@pytest.mark.parametrize("provider, extra", [
    ("powertokens", {"stop": "END"}),  # a string becomes a one-item list, not a rejection
    ("powertokens", {"temperature": 1, "top_p": 0.01, "max_tokens": 131072}),
    ("token360", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}),  # joined
    ("siliconflow", {"messages": [USER] * 10, "thinking_budget": 128}),
    ("toapis", {"temperature": 2, "stop": ["a", "b", "c", "d"]}),
    ("maxtoken", {"messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "a.txt",
                                                                                        "file_data": "x"}}]}]}),
])
def test_requests_at_the_limits_go_through(http: httpx.Client, provider: str, extra: dict) -> None:
    body = {"model": f"glm-{provider}", "messages": [USER], **extra}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text


def test_a_route_that_cannot_take_the_request_is_skipped(http: httpx.Client, sim: Simulator) -> None:
    # glm-fallback: maxtoken first (no tool role on its page), then token360
    messages = [USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "42"}]
    response = http.post("/v1/chat/completions", json={"model": "glm-fallback", "messages": messages})
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "token360"
    assert response.json()["choices"][0]["message"]["content"] == "Tool said: 42"
    assert [r["provider"] for r in sim.requests()] == ["token360"]


def test_when_every_route_rejects_the_first_reason_leads_and_the_others_follow(http: httpx.Client,
                                                                                sim: Simulator) -> None:
    response = http.post("/v1/chat/completions", json={"model": "glm-strict", "messages": [USER], "temperature": 1.5})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "temperature"
    assert error["message"].startswith("temperature 1.5 is outside [0, 1] for powertokens")
    assert ("Other routes of 'glm-strict' rejected it too: temperature 1.5 is outside [0, 1] for maxtoken"
            in error["message"])
    assert sim.requests() == []


@pytest.mark.parametrize("body, param", [
    ({"messages": [USER]}, "model"),
    ({"model": "glm-toapis"}, "messages"),
    ({"model": "glm-toapis", "messages": []}, "messages"),
    ({"model": "glm-toapis", "messages": "hi"}, "messages"),
    ({"model": "glm-toapis", "messages": [{"content": "no role"}]}, "messages[0]"),
    ({"model": "glm-toapis", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": 7, "messages": [USER]}, "model"),
    ({"model": "glm-toapis", "messages": [USER], "temperature": "hot"}, "temperature"),
    ({"model": "glm-toapis", "messages": [USER], "max_tokens": 1.5}, "max_tokens"),
    ({"model": "glm-toapis", "messages": [USER], "stream": "yes"}, "stream"),
    ({"model": "glm-toapis", "messages": [USER], "stop": 5}, "stop"),
    ({"model": "glm-toapis", "messages": [USER], "max_tokens": 5, "max_completion_tokens": 6},
     "max_completion_tokens"),
    ({"model": "glm-toapis", "messages": [USER], "thinking": {"type": "maybe"}}, "thinking.type"),
    ({"model": "glm-toapis", "messages": [USER], "reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"model": "glm-toapis", "messages": [USER], "thinking": {"type": "enabled"}, "enable_thinking": False},
     "thinking"),
    ({"model": "glm-toapis", "messages": [USER], "reasoning_effort": "none", "enable_thinking": True},
     "enable_thinking"),
    ({"model": "glm-token360", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
     "messages[0].content"),
    ({"model": "glm-toapis", "messages": [USER], "reasoning_effort": []}, "reasoning_effort"),
    ({"model": "glm-toapis", "messages": [USER], "reasoning_effort": {}}, "reasoning_effort"),
    ({"model": "glm-powertokens", "messages": [USER], "tools": [{"type": ["function"]}]}, "tools"),
    ({"model": "glm-toapis", "messages": [USER], "stream": True, "stream_options": "yes"}, "stream_options"),
])
def test_a_malformed_request_is_a_400_never_a_500(http: httpx.Client, sim: Simulator, body: dict, param: str) -> None:
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert sim.requests() == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_a_400(http: httpx.Client, raw: bytes) -> None:
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """A JSON value ``depth`` levels deep, objects and arrays in turn."""
    opening, closing = [], []
    for level in range(depth):
        opening.append(b'{"k":' if level % 2 else b"[")
        closing.append(b"}" if level % 2 else b"]")
    return b"".join(opening) + inner + b"".join(reversed(closing))


def body_with(field: bytes, value: bytes) -> bytes:
    return b'{"model":"glm-toapis","messages":[{"role":"user","content":"hi"}],"' + field + b'":' + value + b"}"


# the body itself is level 1: a value under a top-level field has depth - 1 levels to itself
@pytest.mark.parametrize("depth", [2, 10, 63, 64, 65, 100, 253, 254, 255, 256, 1000, 1023, 1024, 1025, 5000])
def test_no_nesting_depth_is_a_500_and_past_the_limit_it_is_a_400_naming_it(http: httpx.Client, sim: Simulator,
                                                                           depth: int) -> None:
    for field in (b"metadata", b"response_format"):
        response = http.post("/v1/chat/completions", content=body_with(field, nested(depth - 1)),
                             headers={"content-type": "application/json"})
        if depth <= MAX_DEPTH:
            assert "levels allowed" not in response.text
            assert response.status_code != 500, response.text
        else:
            assert response.status_code == 400, (depth, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_request" and f"{MAX_DEPTH} levels" in error["message"] or (
                depth > 1024 and "not valid JSON" in error["message"]), error
    assert len(sim.requests()) == (2 if depth <= MAX_DEPTH else 0)


@pytest.mark.parametrize("number, exact", [
    (b"18446744073709551615", True), (b"-9223372036854775808", True),  # the edges of 64 bits
    (b"18446744073709551616", False), (b"-9223372036854775809", False), (b"1" + b"0" * 30, False),
    (b"1" * 5000, False), (b"1e400", False), (b"-1e400", False), (b"1.5e300", True), (b"1e-400", True),
    (b"0." + b"1" * 5000, True),
])
@pytest.mark.parametrize("where", [b"metadata", b"seed", b"max_tokens"])
def test_no_number_is_a_500_and_none_reaches_the_upstream_changed(http: httpx.Client, sim: Simulator,
                                                                  number: bytes, exact: bool, where: bytes) -> None:
    value = b'{"n":' + number + b"}" if where == b"metadata" else number
    response = http.post("/v1/chat/completions", content=body_with(where, value),
                         headers={"content-type": "application/json"})
    assert response.status_code < 500, response.text
    if not exact:
        assert response.status_code == 400 and sim.requests() == [], response.text
    for seen in sim.requests():  # whatever reached the upstream is the number the client sent
        assert seen["body"][where.decode()] == json.loads(value)
