"""Each dialect's documented limits, as one table: request patch -> accepted, or 400 naming a field.

Every row cites the page line it comes from; rows marked "OpenAI" are where the page is silent.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .util import MODELS, PROVIDERS, body, chat, error_message

U = {"role": "user", "content": "hi"}
S = {"role": "system", "content": "be brief"}
A = {"role": "assistant", "content": "ok"}
CALL = {"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
A_CALL = {"role": "assistant", "content": None, "tool_calls": [CALL]}
A_CALL_TEXT = {"role": "assistant", "content": "", "tool_calls": [CALL]}
TOOL = {"role": "tool", "tool_call_id": "call_0", "content": "sunny"}
TEXT_PART = {"type": "text", "text": "hi"}
IMAGE_PART = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
FILE_PART = {"type": "file", "file": {"filename": "a.pdf", "file_data": "https://example.com/a.pdf"}}
AUDIO_PART = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}


def fn(name: str = "lookup") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def fns(n: int) -> list[dict[str, Any]]:
    return [fn(f"f{i}") for i in range(n)]


def msgs(*items: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(items)}


OK = None  # expected: accepted
Case = tuple[str, dict[str, Any], str | None]

POWERTOKENS: list[Case] = [
    ("temperature 0", {"temperature": 0}, OK),  # powertokens.txt:107
    ("temperature 1", {"temperature": 1}, OK),
    ("temperature 1.01", {"temperature": 1.01}, "temperature"),
    ("temperature -0.1", {"temperature": -0.1}, "temperature"),
    ("temperature string", {"temperature": "0.5"}, "temperature"),
    ("top_p 0.01", {"top_p": 0.01}, OK),  # powertokens.txt:114
    ("top_p 0.005", {"top_p": 0.005}, "top_p"),
    ("top_p 0", {"top_p": 0}, "top_p"),
    ("top_p 1.1", {"top_p": 1.1}, "top_p"),
    ("max_tokens 1", {"max_tokens": 1}, OK),  # powertokens.txt:120
    ("max_tokens 131072", {"max_tokens": 131072}, OK),
    ("max_tokens 0", {"max_tokens": 0}, "max_tokens"),
    ("max_tokens 131073", {"max_tokens": 131073}, "max_tokens"),
    ("max_tokens float", {"max_tokens": 1.5}, "max_tokens"),
    ("stop one", {"stop": ["END"]}, OK),  # powertokens.txt:122-126
    ("stop empty", {"stop": []}, OK),
    ("stop string", {"stop": "END"}, "stop"),
    ("stop two", {"stop": ["a", "b"]}, "stop"),
    ("stop non-string", {"stop": [1]}, "stop"),
    ("system+user", msgs(S, U), OK),  # powertokens.txt:87
    ("only system", msgs(S), "messages"),
    ("only assistant", msgs(A), "messages"),
    ("system+assistant", msgs(S, A), "messages"),
    ("no messages", msgs(), "messages"),  # powertokens.txt:89
    ("image part", msgs({"role": "user", "content": [TEXT_PART, IMAGE_PART]}), OK),  # powertokens.txt:87
    ("file part", msgs({"role": "user", "content": [FILE_PART]}), "messages[0].content[0].type"),
    ("tool loop", msgs(U, A_CALL, TOOL) | {"tools": [fn()]}, OK),  # OpenAI
    ("128 tools", {"tools": fns(128)}, OK),  # powertokens.txt:132
    ("129 tools", {"tools": fns(129)}, "tools"),
    ("web_search tool", {"tools": [{"type": "web_search", "web_search": {}}]}, "tools[0].type"),  # :130
    ("tool_choice auto", {"tools": [fn()], "tool_choice": "auto"}, OK),  # powertokens.txt:134-140
    ("tool_choice none", {"tools": [fn()], "tool_choice": "none"}, "tool_choice"),
    ("tool_choice required", {"tools": [fn()], "tool_choice": "required"}, "tool_choice"),
    (
        "tool_choice object",
        {"tools": [fn()], "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
        "tool_choice",
    ),
    ("thinking enabled", {"thinking": {"type": "enabled"}}, OK),  # powertokens.txt:96-99
    ("thinking disabled", {"thinking": {"type": "disabled"}}, OK),
    ("thinking auto", {"thinking": {"type": "auto"}}, OK),
    ("thinking bad type", {"thinking": {"type": "on"}}, "thinking"),
    ("thinking not object", {"thinking": "enabled"}, "thinking"),
    ("thinking no type", {"thinking": {}}, "thinking"),
]

TOKEN360: list[Case] = [
    ("temperature 2", {"temperature": 2}, OK),  # token360.txt:43, OpenAI range
    ("temperature 2.1", {"temperature": 2.1}, "temperature"),
    ("top_p 1.1", {"top_p": 1.1}, "top_p"),  # token360.txt:57, OpenAI range
    ("max_tokens 200000", {"max_tokens": 200000}, OK),  # token360.txt:49, no upper bound
    ("stop string", {"stop": "END"}, OK),  # token360.txt:61
    ("stop four", {"stop": ["a", "b", "c", "d"]}, OK),
    ("stop five", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),  # OpenAI
    ("tool loop, string content", msgs(U, A_CALL_TEXT, TOOL) | {"tools": [fn()]}, OK),  # token360.txt:29-41
    ("tool without tool_call_id", msgs(U, A_CALL_TEXT, {"role": "tool", "content": "x"}), "messages[2].tool_call_id"),
    ("assistant null content", msgs(U, A_CALL, TOOL), "messages[1].content"),  # token360.txt:31
    ("text parts", msgs({"role": "user", "content": [TEXT_PART]}), "messages[0].content"),  # token360.txt:31-33
    ("role function", msgs({"role": "function", "name": "f", "content": "x"}), "messages[0].role"),  # :29
    ("thinking enabled", {"thinking": {"type": "enabled"}}, OK),  # token360.txt:67
    ("thinking disabled", {"thinking": {"type": "disabled"}}, OK),
    ("thinking auto", {"thinking": {"type": "auto"}}, OK),
    ("thinking bad type", {"thinking": {"type": "enable"}}, "thinking"),
    ("response_format json_schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, OK),
    ("tool_choice object", {"tools": [fn()], "tool_choice": {"type": "function", "function": {"name": "lookup"}}}, OK),
    ("tool_choice none", {"tools": [fn()], "tool_choice": "none"}, OK),  # token360.txt:77
    ("tool_choice bogus", {"tools": [fn()], "tool_choice": "always"}, "tool_choice"),
]

SILICONFLOW: list[Case] = [
    ("10 messages", msgs(*[U] * 10), OK),  # siliconflow.txt:78
    ("11 messages", msgs(*[U] * 11), "messages"),
    ("no messages", msgs(), "messages"),
    ("enable_thinking true", {"enable_thinking": True}, OK),  # siliconflow.txt:97-113
    ("enable_thinking false", {"enable_thinking": False}, OK),
    ("enable_thinking GLM-4.6", {"model": "zai-org/GLM-4.6", "enable_thinking": True}, OK),
    ("enable_thinking unlisted model", {"model": "zai-org/GLM-4.5-Air", "enable_thinking": True}, "enable_thinking"),
    ("enable_thinking string", {"enable_thinking": "true"}, "enable_thinking"),
    ("thinking_budget 128", {"thinking_budget": 128}, OK),  # siliconflow.txt:124
    ("thinking_budget 32768", {"thinking_budget": 32768}, OK),
    ("thinking_budget 127", {"thinking_budget": 127}, "thinking_budget"),
    ("thinking_budget 32769", {"thinking_budget": 32769}, "thinking_budget"),
    ("thinking_budget float", {"thinking_budget": 1000.5}, "thinking_budget"),
    ("min_p 0", {"min_p": 0}, OK),  # siliconflow.txt:134
    ("min_p 1", {"min_p": 1}, OK),
    ("min_p 1.1", {"min_p": 1.1}, "min_p"),
    ("stop four", {"stop": ["a", "b", "c", "d"]}, OK),  # siliconflow.txt:141
    ("stop five", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("stop string", {"stop": "END"}, OK),  # OpenAI
    ("128 tools", {"tools": fns(128)}, OK),  # siliconflow.txt:195
    ("129 tools", {"tools": fns(129)}, "tools"),
    ("custom tool", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ("top_k, frequency_penalty, n", {"top_k": 50, "frequency_penalty": 0.5, "n": 1}, OK),  # :166-185
    ("temperature 2", {"temperature": 2}, OK),  # siliconflow.txt:147, OpenAI range
    ("temperature 2.5", {"temperature": 2.5}, "temperature"),
    ("thinking object", {"thinking": {"type": "enabled"}}, "thinking"),
    ("image part", msgs({"role": "user", "content": [TEXT_PART, IMAGE_PART]}), OK),  # OpenAI
    ("tool loop", msgs(U, A_CALL, TOOL) | {"tools": [fn()]}, OK),
]

TOAPIS: list[Case] = [
    ("temperature 2", {"temperature": 2}, OK),  # toapis.txt:88
    ("temperature 0", {"temperature": 0}, OK),
    ("temperature 2.01", {"temperature": 2.01}, "temperature"),
    ("top_p 0", {"top_p": 0}, OK),  # toapis.txt:93
    ("top_p 1.01", {"top_p": 1.01}, "top_p"),
    ("stop string", {"stop": "END"}, OK),  # toapis.txt:95-96
    ("stop four", {"stop": ["a", "b", "c", "d"]}, OK),
    ("stop five", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("text parts", msgs({"role": "user", "content": [TEXT_PART, TEXT_PART]}), OK),  # toapis.txt:54
    ("image part", msgs({"role": "user", "content": [TEXT_PART, IMAGE_PART]}), "messages[0].content[1].type"),
    ("file part", msgs({"role": "user", "content": [FILE_PART]}), "messages[0].content[0].type"),
    ("tools", {"tools": [fn()], "tool_choice": "required"}, OK),  # OpenAI (page silent)
    ("tool loop", msgs(U, A_CALL, TOOL) | {"tools": [fn()]}, OK),
    ("thinking", {"thinking": {"type": "enabled"}}, "thinking"),
]

MAXTOKEN: list[Case] = [
    ("temperature 1", {"temperature": 1}, OK),  # maxtoken.txt:130
    ("temperature 1.01", {"temperature": 1.01}, "temperature"),
    ("top_p 0", {"top_p": 0}, OK),  # maxtoken.txt:131
    ("top_p 1.1", {"top_p": 1.1}, "top_p"),
    ("stop four", {"stop": ["a", "b", "c", "d"]}, OK),  # maxtoken.txt:134
    ("stop five", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("stop string", {"stop": "END"}, "stop"),
    ("parts text image file", msgs({"role": "user", "content": [TEXT_PART, IMAGE_PART, FILE_PART]}), OK),  # :118-125
    ("audio part", msgs({"role": "user", "content": [AUDIO_PART]}), "messages[0].content[0].type"),
    ("system user assistant", msgs(S, U, A, U), OK),  # maxtoken.txt:117
    ("tool role", msgs(U, A_CALL_TEXT, TOOL), "messages[2].role"),
    ("null content", msgs(U, A_CALL), "messages[1].content"),  # maxtoken.txt:118 content required
    ("function and web_search tools", {"tools": [fn(), {"type": "web_search", "web_search": {}}]}, OK),  # :133
    ("custom tool", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ("thinking", {"thinking": {"type": "enabled"}}, "thinking"),
]

# On every provider: fields of another dialect or that no page documents (a gateway must rewrite
# them), and dialect-neutral extras that must pass untouched.
COMMON: list[Case] = [
    ("reasoning_effort", {"reasoning_effort": "low"}, "reasoning_effort"),
    ("max_completion_tokens", {"max_completion_tokens": 10}, "max_completion_tokens"),
    ("stream_options", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("developer role", msgs({"role": "developer", "content": "x"}, U), "messages[0].role"),
    ("missing model", {"model": None}, "model"),
    ("missing messages", {"messages": None}, "messages"),
    ("stream not bool", {"stream": "yes"}, "stream"),
    ("bad role", msgs({"role": "robot", "content": "x"}), "messages[0].role"),
    (
        "neutral extras",
        {"seed": 1, "presence_penalty": 0.1, "user": "u", "response_format": {"type": "json_object"}},
        OK,
    ),
    ("nulls are absent", {"temperature": None, "top_p": None, "stop": None, "max_tokens": None}, OK),
]
NOT_SILICONFLOW: list[Case] = [
    ("enable_thinking", {"enable_thinking": True}, "enable_thinking"),
    ("thinking_budget", {"thinking_budget": 1024}, "thinking_budget"),
    ("top_k", {"top_k": 50}, "top_k"),  # siliconflow.txt:166-170, documented nowhere else
    ("min_p", {"min_p": 0.05}, "min_p"),  # siliconflow.txt:129-137
]

TABLE: list[tuple[str, str, dict[str, Any], str | None]] = [
    (p, name, patch, expected)
    for p, cases in (
        ("powertokens", POWERTOKENS + NOT_SILICONFLOW),
        ("token360", TOKEN360 + NOT_SILICONFLOW),
        ("siliconflow", SILICONFLOW),
        ("toapis", TOAPIS + NOT_SILICONFLOW),
        ("maxtoken", MAXTOKEN + NOT_SILICONFLOW),
    )
    for name, patch, expected in cases + COMMON
]


@pytest.mark.parametrize(("provider", "name", "patch", "field"), TABLE, ids=[f"{p}-{n}" for p, n, _, _ in TABLE])
def test_documented_limit(
    sim_url: str, web: httpx.Client, provider: str, name: str, patch: dict[str, Any], field: str | None
) -> None:
    payload = body(provider) | patch
    for required in ("model", "messages"):  # a None patch deletes a required field
        if payload[required] is None:
            del payload[required]
    response = chat(web, sim_url, provider, payload)
    if field is None:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["role"] == "assistant"
        return
    assert response.status_code == 400, response.text
    message = error_message(provider, response.json())
    assert field in message, message
    if provider == "toapis":
        assert response.json()["error"]["param"] == field


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_json_and_non_object(sim_url: str, web: httpx.Client, provider: str) -> None:
    for payload in (b'{"model": ', b"[1, 2]", b""):
        response = chat(web, sim_url, provider, payload)
        assert response.status_code == 400, payload
        error_message(provider, response.json())


def test_error_codes_per_shape(sim_url: str, web: httpx.Client) -> None:
    bad: dict[str, Any] = {"temperature": 9}
    assert chat(web, sim_url, "powertokens", body("powertokens", **bad)).json()["error"]["code"] == "1210"
    assert chat(web, sim_url, "token360", body("token360", **bad)).json()["error"]["code"] == "1210"
    assert chat(web, sim_url, "siliconflow", body("siliconflow", **bad)).json()["code"] == 20015
    toapis = chat(web, sim_url, "toapis", body("toapis", **bad)).json()["error"]
    assert toapis["type"] == "invalid_request_error" and toapis["param"] == "temperature"
    assert chat(web, sim_url, "maxtoken", body("maxtoken", **bad)).json()["error"]["code"] == 400


def test_models_are_not_restricted(sim_url: str, web: httpx.Client) -> None:
    for provider in PROVIDERS:
        assert chat(web, sim_url, provider, body(provider, model="some-other-model")).status_code == 200
    assert set(MODELS) == set(PROVIDERS)
