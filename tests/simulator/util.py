"""Helpers for the simulator tests: request bodies, SSE parsing, error-shape reading."""

from __future__ import annotations

import json
from typing import Any

import httpx

PROVIDERS = ("powertokens", "token360", "siliconflow", "toapis", "maxtoken")
# A model each page names (powertokens.txt:78, token360.txt:19, siliconflow.txt:70, toapis.txt:70,
# maxtoken.txt:115); siliconflow's is one that supports enable_thinking.
MODELS = {
    "powertokens": "glm-4.7-flash",
    "token360": "glm-5.1",
    "siliconflow": "Pro/zai-org/GLM-4.7",
    "toapis": "glm-5",
    "maxtoken": "glm-5-turbo",
}
AUTH = {"authorization": "Bearer test-key"}


# powertokens and siliconflow reason unasked (their pages' examples: powertokens.txt:13-41,
# siliconflow.txt:11-39); a minimal body turns it off, so that an answer is just the echo unless a
# test asks for reasoning (or for the default, by naming the model or a thinking field itself).
QUIET = {"powertokens": {"thinking": {"type": "disabled"}}, "siliconflow": {"enable_thinking": False}}
THINKING_FIELDS = {"thinking", "enable_thinking", "thinking_budget"}


def body(provider: str, prompt: str = "hello there", **fields: Any) -> dict[str, Any]:
    """A minimal valid request; stream False unless given (powertokens defaults to streaming)."""
    out: dict[str, Any] = {
        "model": MODELS[provider],
        "messages": [{"role": "user", "content": prompt}],
        "stream": False,
    }
    if not fields.keys() & (THINKING_FIELDS | {"model"}):
        out.update(QUIET.get(provider, {}))
    out.update(fields)
    return out


def chat(
    client: httpx.Client, url: str, provider: str, payload: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    kwargs: dict[str, Any] = {"content": payload} if isinstance(payload, (bytes, str)) else {"json": payload}
    return client.post(f"{url}/{provider}/v1/chat/completions", headers={**AUTH, **(headers or {})}, **kwargs)


def sse_data(text: str) -> list[str]:
    """The data payloads of an SSE body, in order (comments dropped)."""
    out = []
    for block in text.split("\n\n"):
        lines = [line[len("data: ") :] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            out.append("\n".join(lines))
    return out


def chunks(text: str) -> list[dict[str, Any]]:
    data = sse_data(text)
    assert data[-1] == "[DONE]", data[-3:]
    return [json.loads(d) for d in data[:-1]]


def deltas(text: str, key: str) -> list[Any]:
    return [c["choices"][0]["delta"][key] for c in chunks(text) if key in c["choices"][0]["delta"]]


def error_message(provider: str, payload: dict[str, Any]) -> str:
    """The human message of an error body, in that provider's documented shape."""
    if provider == "siliconflow":
        assert set(payload) == {"code", "message", "data"} and payload["data"] is None, payload
        return str(payload["message"])
    error = payload["error"]
    if provider in ("powertokens", "token360"):
        assert set(error) == {"code", "message"} and isinstance(error["code"], str), payload
    elif provider == "toapis":
        assert set(error) == {"message", "type", "param", "code"} and error["code"] is None, payload
    else:
        assert isinstance(error["code"], int), payload
    return str(error["message"])
