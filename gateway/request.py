"""The client's body: parsed once, and checked against the OpenAI shape every route shares.

Only the fields the gateway reads are checked; anything else goes through untouched. A body that
fails here is wrong for every upstream, so it is a plain 400 (``invalid_request``), not a limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from .errors import InvalidRequest, bounded

#: Deepest nesting a body may have (the top-level object is level 1). orjson parses 1,024 levels but
#: writes only 254 (issue 11, point 5); 64 is far beyond any real body (a tool's JSON Schema nests a
#: few levels per property) and well under what the upstreams' own parsers take.
MAX_DEPTH = 64
#: Integers orjson keeps exact; past them it reads a float and the upstream would get another number.
_INT_RANGE = range(-(2**63), 2**64)

_NUMBERS = ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty")
_INTEGERS = ("max_tokens", "max_completion_tokens", "n")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object with a string ``model``: enough to know which alias it is for,
    before the rest is checked (so that a bad body for a configured alias is counted as that alias)."""
    body = parse(raw)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model is required and must be a string", param="model")
    return body


def parse(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object no deeper than MAX_DEPTH, every integer in it exact."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if _shape(body):  # a float as large as 2**63 may have been an integer literal orjson could not keep
        _check_integers(raw)
    return body


def _shape(container: dict[str, Any] | list[Any], depth: int = 1) -> bool:
    """Raises when the body nests deeper than MAX_DEPTH; True when it holds a float of 2**63 or more
    (one walk over the parsed body: a few microseconds for a chat body, less than parsing it; by
    recursion, no deeper than MAX_DEPTH, which is a quarter faster than a stack of its own)."""
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"the body nests deeper than the {MAX_DEPTH} levels allowed")
    huge = False
    items: Iterable[Any] = container.values() if isinstance(container, dict) else container
    for item in items:
        kind = type(item)
        if kind is str:
            continue
        if kind is dict or kind is list:
            huge = _shape(item, depth + 1) or huge
        elif kind is float and not -_HUGE < item < _HUGE:
            huge = True
    return huge


_HUGE = float(2**63)


def _check_integers(raw: bytes) -> None:
    """A 400 naming the first integer that would reach the upstream as a different number. (The
    standard library's parser keeps integers whole; the body is known to be valid and shallow.)"""
    try:
        exact = json.loads(raw)
    except ValueError:  # more digits than Python converts (4,300)
        raise InvalidRequest("the body has an integer with more digits than allowed") from None
    stack: list[tuple[Any, str]] = [(exact, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT_RANGE:
            param = bounded(path)
            raise InvalidRequest(f"{param} is an integer outside the 64-bit range, which cannot be sent exactly",
                                 param=param)


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
    keys = body.keys()
    if not keys.isdisjoint(_NUMBERS):
        for name in _NUMBERS:
            if body.get(name) is not None and not _is_number(body[name]):
                raise InvalidRequest(f"{name} must be a number", param=name)
    if not keys.isdisjoint(_INTEGERS):
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
