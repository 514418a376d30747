"""Deterministic answers derived from the request, and their JSON / SSE encodings.

The rules are documented in the package docstring (``gateway/simulator/__init__.py``); keep both
in step. Everything here is string work on an already-validated body: no model, no randomness.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .dialects import Dialect, JsonObj

_WORD = re.compile(r"\S+")
TOOL_CALL_ID = "call_0"
DONE_EVENT = b"data: [DONE]\n\n"
MALFORMED_EVENT = b'data: {"id": "chatcmpl-sim-malformed", "choices": [{"delta": {"content": \n\n'
KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True, slots=True)
class Answer:
    content: str | None  # None for a tool-call answer
    reasoning: str | None  # None when thinking is off
    tool_name: str | None
    arguments: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def text_of(content: Any) -> str:
    """A message's text: the string itself, or its text parts joined with newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def word_count(text: str | None) -> int:
    return len(text.split()) if text else 0


def first_words(text: str, n: int) -> str:
    """The text up to the end of its n-th whitespace-separated word, original spacing kept."""
    if n <= 0:
        return ""
    for i, match in enumerate(_WORD.finditer(text), 1):
        if i == n:
            return text[: match.end()]
    return text


def _pick_tool(body: JsonObj, last: JsonObj, prompt: str) -> str | None:
    tools = body.get("tools")
    if not tools or last.get("role") != "user":
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        return str(choice["function"]["name"])
    names: list[str] = [t["function"]["name"] for t in tools if t.get("type") == "function"]
    for name in names:
        if name in prompt:
            return name
    return names[0] if choice == "required" and names else None


def build_answer(body: JsonObj, *, thinking: bool, words: int | None, tool_arguments: str | None = None) -> Answer:
    messages = body["messages"]
    # the turn being answered: system messages after it (Claude Code sends them) only add context
    last = next((m for m in reversed(messages) if m.get("role") != "system"), messages[-1])
    prompt = text_of(last.get("content"))
    prompt_tokens = sum(word_count(text_of(m.get("content"))) for m in messages)
    reasoning = f"Thinking about: {prompt}" if thinking else None
    tool = _pick_tool(body, last, prompt)
    if tool is not None:
        arguments = tool_arguments if tool_arguments is not None else json.dumps({"query": prompt})
        completion = word_count(arguments) + word_count(reasoning)
        return Answer(None, reasoning, tool, arguments, "tool_calls", prompt_tokens, completion)
    if words is not None:
        content = " ".join(f"w{i}" for i in range(words))
    elif last.get("role") == "tool":
        content = f"Tool said: {prompt}"
    else:
        content = f"Echo: {prompt}"
    finish = "stop"
    budget = body.get("max_tokens")
    if budget is not None and budget < word_count(content) + word_count(reasoning):
        # max_tokens bounds reasoning + content together, reasoning first, as thinking models do.
        if reasoning is not None:
            reasoning = first_words(reasoning, budget)
        content = first_words(content, budget - word_count(reasoning))
        finish = "length"
    completion = word_count(content) + word_count(reasoning)
    return Answer(content, reasoning, None, None, finish, prompt_tokens, completion)


def usage(d: Dialect, a: Answer) -> JsonObj:
    out: JsonObj = {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
    }
    if d.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": 0}
    if d.siliconflow_usage:
        out["completion_tokens_details"] = {"reasoning_tokens": word_count(a.reasoning)}
        out["prompt_tokens_details"] = {"cached_tokens": 0}
        out["prompt_cache_hit_tokens"] = 0
        out["prompt_cache_miss_tokens"] = a.prompt_tokens
    return out


def completion_json(d: Dialect, a: Answer, *, id_: str, created: int, model: str) -> bytes:
    message: JsonObj = {"role": "assistant", "content": a.content}
    if a.reasoning is not None:
        message["reasoning_content"] = a.reasoning
    if a.tool_name is not None:
        function = {"name": a.tool_name, "arguments": a.arguments}
        message["tool_calls"] = [{"id": TOOL_CALL_ID, "type": "function", "function": function}]
    body: JsonObj = {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": a.finish_reason}],
        "usage": usage(d, a),
        **d.response_extras,
    }
    return orjson.dumps(body)


def split_on_spaces(text: str | None) -> list[str]:
    """Pieces that concatenate back to the text, each after the first keeping its leading space."""
    if not text:
        return []
    first, *rest = text.split(" ")
    return [first, *(" " + piece for piece in rest)]


def _split_even(text: str, parts: int = 3, longest: int = 16) -> list[str]:
    size = max(1, min(longest, -(-len(text) // parts)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def chunk_events(d: Dialect, a: Answer, *, id_: str, created: int, model: str) -> list[bytes]:
    """All SSE events of a streamed answer, [DONE] excluded (the writer adds it)."""
    head = b'{"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,' % (
        orjson.dumps(id_),
        created,
        orjson.dumps(model),
    )
    extras = orjson.dumps(d.response_extras)[1:-1] + b"," if d.response_extras else b""

    def event(delta: JsonObj, finish: str | None = None, tail: bytes = b"") -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + head + extras + b'"choices":[' + orjson.dumps(choice) + b"]" + tail + b"}\n\n"

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"reasoning_content": piece}) for piece in split_on_spaces(a.reasoning)]
    if a.tool_name is not None:
        opening = {
            "index": 0,
            "id": TOOL_CALL_ID,
            "type": "function",
            "function": {"name": a.tool_name, "arguments": ""},
        }
        events.append(event({"tool_calls": [opening]}))
        for piece in _split_even(a.arguments or ""):
            events.append(event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        events += [event({"content": piece}) for piece in split_on_spaces(a.content)]
    events.append(event({}, a.finish_reason, b',"usage":' + orjson.dumps(usage(d, a))))
    return events
