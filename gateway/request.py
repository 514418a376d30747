"""The client's body: parsed once, and checked against the OpenAI shape every route shares.

Only the fields the gateway reads are checked; anything else goes through untouched. A body that
fails here is wrong for every upstream, so it is a plain 400 (``invalid_request``), not a limit.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import InvalidRequest

_NUMBERS = ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty")
_INTEGERS = ("max_tokens", "max_completion_tokens", "n")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object with a string ``model``: enough to know which alias it is for,
    before the rest is checked (so that a bad body for a configured alias is counted as that alias)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model is required and must be a string", param="model")
    return body


def check(body: dict[str, Any]) -> dict[str, Any]:
    """The fields every route reads, checked for their shape; returns ``body``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages is required and must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a string role", param=f"messages[{i}]")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidRequest(f"messages[{i}].content must be a string or an array of parts",
                                 param=f"messages[{i}].content")
        if isinstance(content, list) and not all(
                isinstance(p, dict) and isinstance(p.get("type"), str)
                and (p["type"] != "text" or isinstance(p.get("text"), str)) for p in content):
            raise InvalidRequest(f"messages[{i}].content parts must be objects with a type (and a string text "
                                 "for text parts)", param=f"messages[{i}].content")
    for name in _NUMBERS:
        if body.get(name) is not None and not _is_number(body[name]):
            raise InvalidRequest(f"{name} must be a number", param=name)
    for name in _INTEGERS:
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidRequest(f"{name} must be an integer", param=name)
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream must be true or false", param="stream")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidRequest("stop must be a string or an array of strings", param="stop")
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(t, dict) and isinstance(t.get("type", ""), str) for t in tools)):
        raise InvalidRequest("tools must be an array of objects with a string type", param="tools")
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    max_tokens, max_completion = body.get("max_tokens"), body.get("max_completion_tokens")
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise InvalidRequest(
            f"max_tokens ({max_tokens}) and max_completion_tokens ({max_completion}) disagree; send one",
            param="max_completion_tokens")
    return body


def wants_stream(body: dict[str, Any]) -> bool:
    """OpenAI's default: no ``stream`` means a JSON answer, whatever the upstream's own default."""
    return body.get("stream") is True


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
