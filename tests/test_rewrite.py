"""Dialect rewriting, asserted on what each upstream received."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEY, PROVIDERS, Simulator

USER = {"role": "user", "content": "hi"}
ARRAY_STOP = {"powertokens", "maxtoken"}  # their pages type stop as an array


def sent(http: httpx.Client, sim: Simulator, provider: str, **extra: Any) -> tuple[httpx.Response, dict[str, Any]]:
    response = http.post("/v1/chat/completions", json={"model": f"glm-{provider}", "messages": [USER], **extra})
    assert response.status_code == 200, response.text
    return response, sim.last(provider)["body"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stop_string_becomes_a_list_only_where_the_page_says_array(http: httpx.Client, sim: Simulator,
                                                                   provider: str) -> None:
    _, body = sent(http, sim, provider, stop="END")
    assert body["stop"] == (["END"] if provider in ARRAY_STOP else "END")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_completion_tokens_becomes_max_tokens(http: httpx.Client, sim: Simulator, provider: str) -> None:
    _, body = sent(http, sim, provider, max_completion_tokens=64)
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_developer_becomes_system_and_null_content_becomes_empty(http: httpx.Client, sim: Simulator,
                                                                  provider: str) -> None:
    messages = [{"role": "developer", "content": "be brief"}, USER,
                {"role": "assistant", "content": None, "reasoning_content": "r"}, USER]
    _, body = sent(http, sim, provider, messages=messages)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == ""


def test_an_assistant_turn_without_content_gets_an_empty_string(http: httpx.Client, sim: Simulator) -> None:
    turn = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]}
    messages = [USER, turn, {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    _, body = sent(http, sim, "token360", messages=messages)  # token360.txt:31 content string, required
    assert body["messages"][1] == {**turn, "content": ""}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_null_fields_are_not_sent(http: httpx.Client, sim: Simulator, provider: str) -> None:
    nulls = {"stop": None, "tools": None, "tool_choice": None, "temperature": None, "max_tokens": None,
             "thinking": None, "reasoning_effort": None}
    response, body = sent(http, sim, provider, **nulls)
    assert not nulls.keys() & body.keys()
    assert "x-gateway-dropped" not in response.headers


def test_text_parts_are_joined_for_a_string_only_upstream(http: httpx.Client, sim: Simulator) -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    response, body = sent(http, sim, "token360", messages=[{"role": "user", "content": parts}])
    assert body["messages"][0]["content"] == "first\nsecond"
    assert response.json()["choices"][0]["message"]["content"] == "Echo: first\nsecond"
    _, body = sent(http, sim, "maxtoken", messages=[{"role": "user", "content": parts}])
    assert body["messages"][0]["content"] == parts  # parts are documented there: untouched


@pytest.mark.parametrize("provider", PROVIDERS)
def test_reasoning_content_sent_back_reaches_the_upstream_byte_for_byte(http: httpx.Client, sim: Simulator,
                                                                          provider: str) -> None:
    reasoning = "Weighing 'α' vs \"β\"…\n\ttabs, \\backslashes\\, emoji 🧠 and </script>"
    messages = [USER, {"role": "assistant", "content": "ok", "reasoning_content": reasoning}, USER]
    _, body = sent(http, sim, provider, messages=messages)
    assert body["messages"][1]["reasoning_content"] == reasoning


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dialect_neutral_fields_pass_through(http: httpx.Client, sim: Simulator, provider: str) -> None:
    extra = {"seed": 7, "presence_penalty": 0.5, "user": "u-1", "response_format": {"type": "json_object"},
             "metadata": {"k": "v"}}
    response, body = sent(http, sim, provider, **extra)
    assert {k: body[k] for k in extra} == extra
    assert "x-gateway-dropped" not in response.headers


@pytest.mark.parametrize("provider", PROVIDERS)
def test_another_dialects_fields_are_dropped_and_reported(http: httpx.Client, sim: Simulator, provider: str) -> None:
    response, body = sent(http, sim, provider, top_k=40, min_p=0.05)  # siliconflow.txt:129-170 only
    if provider == "siliconflow":
        assert (body["top_k"], body["min_p"]) == (40, 0.05) and "x-gateway-dropped" not in response.headers
    else:
        assert not {"top_k", "min_p"} & body.keys()
        assert set(response.headers["x-gateway-dropped"].split(",")) == {"top_k", "min_p"}


# provider, client form -> the fields the upstream must get, and what is reported dropped
THINKING: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    ("powertokens", {"reasoning_effort": "high"}, {"thinking": {"type": "enabled"}}, "reasoning_effort"),
    ("powertokens", {"reasoning_effort": "minimal"}, {"thinking": {"type": "disabled"}}, None),
    ("powertokens", {"enable_thinking": True, "thinking_budget": 2000}, {"thinking": {"type": "enabled"}},
     "thinking_budget"),
    ("token360", {"thinking": {"type": "auto"}}, {"thinking": {"type": "auto"}}, None),
    ("token360", {"enable_thinking": False}, {"thinking": {"type": "disabled"}}, None),
    ("siliconflow", {"reasoning_effort": "low"}, {"enable_thinking": True, "thinking_budget": 1024}, None),
    ("siliconflow", {"reasoning_effort": "medium"}, {"enable_thinking": True, "thinking_budget": 4096}, None),
    ("siliconflow", {"reasoning_effort": "high"}, {"enable_thinking": True, "thinking_budget": 16384}, None),
    ("siliconflow", {"reasoning_effort": "high", "thinking_budget": 500},
     {"enable_thinking": True, "thinking_budget": 500}, None),
    ("siliconflow", {"reasoning_effort": "none"}, {"enable_thinking": False}, None),
    ("siliconflow", {"thinking": {"type": "enabled"}}, {"enable_thinking": True}, None),
    ("siliconflow", {"thinking": {"type": "auto"}}, {}, None),  # no enable_thinking: the model's default
    ("toapis", {"reasoning_effort": "high"}, {}, "reasoning_effort"),
    ("toapis", {"thinking": {"type": "enabled"}}, {}, "thinking"),
    ("maxtoken", {"enable_thinking": True, "thinking_budget": 300}, {}, "enable_thinking,thinking_budget"),
]
OTHER_DIALECTS = {"thinking", "enable_thinking", "thinking_budget", "reasoning_effort"}


@pytest.mark.parametrize("provider, form, expected, dropped", THINKING)
def test_thinking_forms_reach_the_upstream_in_its_own_form(http: httpx.Client, sim: Simulator, provider: str,
                                                           form: dict, expected: dict, dropped: str | None) -> None:
    response, body = sent(http, sim, provider, **form)
    assert {k: body[k] for k in OTHER_DIALECTS & body.keys()} == expected
    assert response.headers.get("x-gateway-dropped") == dropped


def test_a_model_without_the_thinking_switch_gets_only_the_budget(http: httpx.Client, sim: Simulator) -> None:
    # siliconflow.txt:100-113 lists the models that take enable_thinking; QwQ-32B is not one of them
    response = http.post("/v1/chat/completions", json={"model": "glm-sf-qwq", "messages": [USER],
                                                        "reasoning_effort": "high"})
    assert response.status_code == 200, response.text
    body = sim.last("siliconflow")["body"]
    assert "enable_thinking" not in body and body["thinking_budget"] == 16384
    assert response.headers["x-gateway-dropped"] == "reasoning_effort"


def test_a_thinking_object_keeps_its_other_keys(http: httpx.Client, sim: Simulator) -> None:
    _, body = sent(http, sim, "token360", thinking={"type": "enabled", "clear_thinking": False})
    assert body["thinking"] == {"type": "enabled", "clear_thinking": False}


def test_only_the_gateway_chooses_the_upstream_and_its_headers(http: httpx.Client, sim: Simulator) -> None:
    hostile = {"api_base": "http://169.254.169.254/latest", "base_url": "http://evil.example/v1",
               "api_key": "sk-steal", "extra_headers": {"x-leak": "1"}}
    response = http.post("/v1/chat/completions", json={"model": "glm-toapis", "messages": [USER], **hostile},
                         headers={"x-base-url": "http://evil.example", "cookie": "session=secret",
                                  "x-custom": "nope", "openai-organization": "org-1"})
    assert response.status_code == 200
    received = sim.last("toapis")
    assert received["path"] == "/toapis/v1/chat/completions"
    assert not hostile.keys() & received["body"].keys()
    assert set(response.headers["x-gateway-dropped"].split(",")) == set(hostile)
    for leaked in ("cookie", "x-custom", "x-base-url", "openai-organization"):
        assert leaked not in received["headers"]
    assert CLIENT_KEY not in str(received)


def test_request_id_is_taken_from_the_client_or_made(http: httpx.Client, sim: Simulator) -> None:
    response = http.post("/v1/chat/completions", json={"model": "glm-toapis", "messages": [USER]},
                         headers={"x-request-id": "req-from-client-1"})
    assert response.headers["x-request-id"] == "req-from-client-1"
    assert sim.last()["headers"]["x-request-id"] == "req-from-client-1"
    made = http.post("/v1/chat/completions", json={"model": "glm-toapis", "messages": [USER]}).headers["x-request-id"]
    assert len(made) == 32 and sim.last()["headers"]["x-request-id"] == made
    for unsafe in (b"\xff\xfe", b"a" * 129, b"id with spaces", b"{json}"):
        response = http.post("/v1/chat/completions", json={"model": "glm-toapis", "messages": [USER]},
                             headers={"x-request-id": unsafe})
        assert response.status_code == 200 and len(response.headers["x-request-id"]) == 32
