"""Deterministic answers and each provider's response shape (JSON and SSE), over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .util import MODELS, PROVIDERS, body, chat, chunks, deltas, error_message

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}},
]
THINKING_ON: dict[str, dict[str, Any]] = {  # each provider's own dialect for turning reasoning on
    "powertokens": {"thinking": {"type": "enabled"}},
    "token360": {"thinking": {"type": "enabled"}},
    "siliconflow": {"enable_thinking": True},
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_echo_answer_and_usage(sim_url: str, web: httpx.Client, provider: str) -> None:
    payload = body(provider, "what is a vector database")
    payload["messages"].insert(0, {"role": "system", "content": "be brief and exact"})
    response = chat(web, sim_url, provider, payload)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["object"] == "chat.completion" and isinstance(data["created"], int) and data["id"]
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Echo: what is a vector database"},
            "finish_reason": "stop",
        }
    ]
    usage = data["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (9, 6, 15)


def test_usage_extras_and_model(sim_url: str, web: httpx.Client) -> None:
    got = {p: chat(web, sim_url, p, body(p, "a b c")).json() for p in PROVIDERS}
    base = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    # powertokens.txt:50-52; its example answers glm-5 to a glm-4.7-flash request (:15, :34)
    assert got["powertokens"]["usage"] == base | {"prompt_tokens_details": {"cached_tokens": 0}}
    assert got["powertokens"]["model"] == "glm-5"
    assert chat(web, sim_url, "powertokens", body("powertokens", model="glm-4-plus")).json()["model"] == "glm-4-plus"
    # siliconflow.txt:34-47
    assert got["siliconflow"]["usage"] == base | {
        "completion_tokens_details": {"reasoning_tokens": 0},
        "prompt_tokens_details": {"cached_tokens": 0},
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 3,
    }
    assert got["siliconflow"]["system_fingerprint"] == ""
    for provider in ("token360", "toapis", "maxtoken", "siliconflow"):
        assert got[provider]["model"] == MODELS[provider]
    for provider in ("token360", "toapis", "maxtoken"):
        assert got[provider]["usage"] == base and "system_fingerprint" not in got[provider]


def test_prompt_from_text_parts(sim_url: str, web: httpx.Client) -> None:
    content = [
        {"type": "text", "text": "line one"},
        {"type": "image_url", "image_url": {"url": "u"}},
        {"type": "text", "text": "two"},
    ]
    payload = body("maxtoken", messages=[{"role": "user", "content": content}])
    message = chat(web, sim_url, "maxtoken", payload).json()["choices"][0]["message"]
    assert message["content"] == "Echo: line one\ntwo"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_default(sim_url: str, web: httpx.Client, provider: str) -> None:
    payload = body(provider)
    del payload["stream"]
    response = chat(web, sim_url, provider, payload)
    streams = provider == "powertokens"  # powertokens.txt:90-94 default true; the rest false
    assert response.headers["content-type"] == ("text/event-stream" if streams else "application/json")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_shape(sim_url: str, web: httpx.Client, provider: str) -> None:
    prompt = "one  two three"
    plain = chat(web, sim_url, provider, body(provider, prompt)).json()
    response = chat(web, sim_url, provider, body(provider, prompt, stream=True))
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text.endswith("data: [DONE]\n\n")
    events = chunks(response.text)
    for event in events:
        assert set(event) - {"usage", "system_fingerprint"} == {"id", "object", "created", "model", "choices"}
        assert event["object"] == "chat.completion.chunk" and event["model"] == plain["model"]
        assert event["choices"][0]["index"] == 0
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = deltas(response.text, "content")[1:]
    assert pieces == ["Echo:", " one", " ", " two", " three"]
    assert "".join(pieces) == plain["choices"][0]["message"]["content"]
    last = events[-1]
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert last["usage"] == plain["usage"]
    assert all("usage" not in e for e in events[:-1])
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


@pytest.mark.parametrize("provider, model, reasons", [
    ("powertokens", "glm-4.7-flash", True),  # powertokens.txt:13-41: nothing asked, reasoning_content
    ("siliconflow", "Pro/zai-org/GLM-4.7", True),  # siliconflow.txt:11-39: nothing asked, reasoning
    ("siliconflow", "Qwen/QwQ-32B", False),  # not a model of the enable_thinking list (:100-113)
    ("token360", "glm-5.1", False),  # token360.txt:121-156: no reasoning in its example
    ("toapis", "glm-5", False),
    ("maxtoken", "glm-5-turbo", False),
])
def test_reasoning_when_nothing_is_asked(sim_url: str, web: httpx.Client, provider: str, model: str,
                                         reasons: bool) -> None:
    message = chat(web, sim_url, provider, body(provider, "why", model=model)).json()["choices"][0]["message"]
    assert message.get("reasoning_content") == ("Thinking about: why" if reasons else None)


@pytest.mark.parametrize("provider", ["powertokens", "token360", "siliconflow"])
def test_thinking_in_own_dialect(sim_url: str, web: httpx.Client, provider: str) -> None:
    on = chat(web, sim_url, provider, body(provider, "why sky blue", **THINKING_ON[provider])).json()
    message = on["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "Echo: why sky blue",
        "reasoning_content": "Thinking about: why sky blue",
    }
    assert on["usage"]["completion_tokens"] == 4 + 5
    if provider == "siliconflow":
        assert on["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    off = {"siliconflow": {"enable_thinking": False}}.get(provider, {"thinking": {"type": "disabled"}})
    for fields in ({}, off):
        plain = chat(web, sim_url, provider, body(provider, "why", **fields)).json()["choices"][0]["message"]
        assert "reasoning_content" not in plain
    if provider != "siliconflow":
        auto = chat(web, sim_url, provider, body(provider, "x", thinking={"type": "auto"})).json()
        assert auto["choices"][0]["message"]["reasoning_content"] == "Thinking about: x"
    streamed = chat(web, sim_url, provider, body(provider, "why sky blue", stream=True, **THINKING_ON[provider])).text
    assert deltas(streamed, "reasoning_content") == ["Thinking", " about:", " why", " sky", " blue"]
    data = [list(c["choices"][0]["delta"]) for c in chunks(streamed)]
    assert data.index(["reasoning_content"]) < data.index(["content"], 1)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_call(sim_url: str, web: httpx.Client, provider: str) -> None:
    prompt = "please search for the weather"  # names "search" (2nd tool) only
    data = chat(web, sim_url, provider, body(provider, prompt, tools=TOOLS)).json()
    arguments = json.dumps({"query": prompt})
    assert data["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "search", "arguments": arguments}}
            ],
        },
        "finish_reason": "tool_calls",
    }
    assert data["usage"]["completion_tokens"] == len(arguments.split())
    streamed = chat(web, sim_url, provider, body(provider, prompt, tools=TOOLS, stream=True)).text
    calls = [d[0] for d in deltas(streamed, "tool_calls")]
    assert calls[0] == {"index": 0, "id": "call_0", "type": "function", "function": {"name": "search", "arguments": ""}}
    assert len(calls) >= 4 and all(
        c == {"index": 0, "function": {"arguments": c["function"]["arguments"]}} for c in calls[1:]
    )
    assert "".join(c["function"]["arguments"] for c in calls[1:]) == arguments
    assert chunks(streamed)[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_rules(sim_url: str, web: httpx.Client) -> None:
    def answer(prompt: str, **fields: Any) -> Any:
        return chat(web, sim_url, "toapis", body("toapis", prompt, tools=TOOLS, **fields)).json()["choices"][0]

    assert answer("get_weather and search")["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert answer("nothing named here")["message"]["content"] == "Echo: nothing named here"
    assert answer("search", tool_choice="none")["finish_reason"] == "stop"
    forced = answer("hello", tool_choice={"type": "function", "function": {"name": "search"}})
    assert forced["message"]["tool_calls"][0]["function"]["name"] == "search"
    assert answer("hello", tool_choice="required")["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    # a tool name in a system message, or no tools at all, gives text
    system_only = body("toapis", "hi", tools=TOOLS)
    system_only["messages"].insert(0, {"role": "system", "content": "search"})
    assert chat(web, sim_url, "toapis", system_only).json()["choices"][0]["finish_reason"] == "stop"
    assert chat(web, sim_url, "toapis", body("toapis", "search")).json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("provider", ["powertokens", "siliconflow", "toapis", "token360"])
def test_tool_result_gets_text(sim_url: str, web: httpx.Client, provider: str) -> None:
    call = {"id": "call_0", "type": "function", "function": {"name": "search", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "search it"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": "21 degrees, sunny"},
    ]
    data = chat(web, sim_url, provider, body(provider, messages=messages, tools=TOOLS)).json()
    assert data["choices"][0]["message"]["content"] == "Tool said: 21 degrees, sunny"
    assert data["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_truncates(sim_url: str, web: httpx.Client) -> None:
    data = chat(web, sim_url, "toapis", body("toapis", "one two  three four", max_tokens=3)).json()
    assert data["choices"][0]["message"]["content"] == "Echo: one two"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3
    exact = chat(web, sim_url, "toapis", body("toapis", "one two", max_tokens=3)).json()
    assert exact["choices"][0]["finish_reason"] == "stop"
    # the budget is spent on reasoning first: "Thinking about: a b" (4) + "Echo: a b" (3) in 6
    thought = chat(web, sim_url, "token360", body("token360", "a b", max_tokens=6, thinking={"type": "enabled"})).json()
    message = thought["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("Thinking about: a b", "Echo: a")
    assert thought["usage"]["completion_tokens"] == 6 and thought["choices"][0]["finish_reason"] == "length"
    streamed = chat(web, sim_url, "toapis", body("toapis", "one two three", max_tokens=2, stream=True)).text
    assert "".join(deltas(streamed, "content")) == "Echo: one"
    assert chunks(streamed)[-1]["choices"][0]["finish_reason"] == "length"


def test_siliconflow_trace_header(sim_url: str, web: httpx.Client) -> None:
    ok = chat(web, sim_url, "siliconflow", body("siliconflow"))
    streamed = chat(web, sim_url, "siliconflow", body("siliconflow", stream=True))
    bad = chat(web, sim_url, "siliconflow", body("siliconflow", temperature=5))
    unauthorized = web.post(f"{sim_url}/siliconflow/v1/chat/completions", json=body("siliconflow"))
    injected = chat(web, sim_url, "siliconflow", body("siliconflow"), {"x-sim-status": "503"})
    responses = [ok, streamed, bad, unauthorized, injected]
    assert [r.status_code for r in responses] == [200, 200, 400, 401, 503]
    ids = [r.headers["x-siliconcloud-trace-id"] for r in responses]
    assert len(set(ids)) == len(ids) and all(ids)
    assert "x-siliconcloud-trace-id" not in chat(web, sim_url, "toapis", body("toapis")).headers


def test_maxtoken_content_policy(sim_url: str, web: httpx.Client) -> None:
    for stream in (False, True):
        response = chat(web, sim_url, "maxtoken", body("maxtoken", "tell me [unsafe] things", stream=stream))
        assert response.status_code == 400  # maxtoken.txt:165 "(actual status code is 400)"
        assert response.json() == {
            "error": {
                "code": 503,
                "type": "content_policy_violation",
                "message": "Content policy violation: content blocked due to safety concerns",
            }
        }
    system = body("maxtoken")
    system["messages"].insert(0, {"role": "system", "content": "[unsafe]"})
    assert chat(web, sim_url, "maxtoken", system).status_code == 400
    assert chat(web, sim_url, "toapis", body("toapis", "[unsafe]")).status_code == 200


@pytest.mark.parametrize("provider", PROVIDERS)
def test_auth(sim_url: str, web: httpx.Client, provider: str) -> None:
    url = f"{sim_url}/{provider}/v1/chat/completions"
    for headers in ({}, {"authorization": ""}, {"authorization": "Bearer"}, {"authorization": "Basic abc"}):
        response = web.post(url, json=body(provider), headers=headers)
        assert response.status_code == 401, headers
        error_message(provider, response.json())
    if provider == "maxtoken":  # maxtoken.txt:161
        assert response.json() == {"error": {"code": 401, "message": "API key is missing or invalid"}}
    assert web.post(url, json=body(provider), headers={"authorization": "Bearer anything"}).status_code == 200


def test_keys_per_provider() -> None:
    from gateway.simulator import create_app
    from tests.servers import serve

    with serve(create_app(keys={"toapis": "sk-right"})) as url, httpx.Client() as c:

        def status(provider: str, key: str) -> int:
            return chat(c, url, provider, body(provider), {"authorization": f"Bearer {key}"}).status_code

        assert status("toapis", "sk-right") == 200
        assert status("toapis", "sk-wrong") == 401
        assert status("maxtoken", "sk-wrong") == 200


def test_unknown_paths(sim_url: str, web: httpx.Client) -> None:
    for path in ("/openai/v1/chat/completions", "/toapis/v1/completions", "/toapis/chat/completions", "/"):
        response = web.post(f"{sim_url}{path}", json={}, headers={"authorization": "Bearer k"})
        assert response.status_code == 404 and "error" in response.json()
    assert web.get(f"{sim_url}/toapis/v1/chat/completions").status_code == 405
    assert web.get(f"{sim_url}/_sim/nothing").status_code == 404
