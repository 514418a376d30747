"""Request validation: one pass over the body against a Dialect's documented limits.

The limits (and their doc line references) live in ``dialects.py``; this module only applies them.
A ``null`` value counts as absent, as in OpenAI's API, except for the foreign fields below, which
are rejected whenever the key is present: a gateway must drop or rewrite them, not null them.
"""

from __future__ import annotations

from typing import Any

from .dialects import DIALECT_EXTRAS, FOREIGN_EVERYWHERE, Dialect, Range


class Reject(Exception):
    """A 400 naming the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(name: str, value: Any, rng: Range, *, integer: bool) -> None:
    if not (_is_int(value) if integer else _is_number(value)):
        raise Reject(name, f"{name} must be {'an integer' if integer else 'a number'}")
    if value < rng.lo or (rng.hi is not None and value > rng.hi):
        bounds = f">= {rng.lo:g}" if rng.hi is None else f"between {rng.lo:g} and {rng.hi:g}"
        raise Reject(name, f"{name} must be {bounds}, got {value}")


def validate(d: Dialect, body: Any) -> None:
    """Raise Reject for the first documented limit the request breaks."""
    if not isinstance(body, dict):
        raise Reject("body", "request body must be a JSON object")
    _foreign_fields(d, body)
    model = body.get("model")
    # model is required on every page: powertokens.txt:71-73, token360.txt:15, siliconflow.txt:62-64,
    # toapis.txt:66-70, maxtoken.txt:115. Its value is not checked: powertokens.txt:75-81 gives an
    # enum of glm-4.7-flash and then "glm-5-turbo" as the example; siliconflow.txt:66 says its
    # catalogue changes.
    if not isinstance(model, str) or not model:
        raise Reject("model", "model is required and must be a non-empty string")
    _messages(d, body.get("messages"))
    # stream is a boolean on every page (powertokens.txt:91, token360.txt:53, toapis.txt:76, maxtoken.txt:132)
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise Reject("stream", "stream must be a boolean")
    # ranges: Dialect.temperature / top_p / max_tokens / extra_ranges, each cited in dialects.py
    for name, rng in (("temperature", d.temperature), ("top_p", d.top_p)):
        if body.get(name) is not None:
            _in_range(name, body[name], rng, integer=False)
    if body.get("max_tokens") is not None:
        _in_range("max_tokens", body["max_tokens"], d.max_tokens, integer=True)
    for name, (rng, integer) in d.extra_ranges.items():
        if body.get(name) is not None:
            _in_range(name, body[name], rng, integer=integer)
    _stop(d, body.get("stop"))
    _tools(d, body.get("tools"))
    _tool_choice(d, body.get("tool_choice"))
    _thinking(d, body)


def _foreign_fields(d: Dialect, body: dict[str, Any]) -> None:
    # OpenAI-client fields that no page documents (a gateway must rewrite them), and the thinking
    # fields of the other dialects: thinking only on powertokens.txt:96 / token360.txt:65,
    # enable_thinking / thinking_budget only on siliconflow.txt:97,118.
    foreign = list(FOREIGN_EVERYWHERE)
    if d.thinking != "zhipu":
        foreign.append("thinking")
    if d.thinking != "siliconflow":
        foreign += ["enable_thinking", "thinking_budget"]
    foreign += sorted(DIALECT_EXTRAS - d.own_extras)
    for name in foreign:
        if name in body:
            raise Reject(name, f"unsupported parameter: {name}")


def _messages(d: Dialect, messages: Any) -> None:
    # non-empty on every page (powertokens.txt:89, siliconflow.txt:78; OpenAI elsewhere)
    if not isinstance(messages, list) or not messages:
        raise Reject("messages", "messages must be a non-empty array")
    if d.messages_max is not None and len(messages) > d.messages_max:  # siliconflow.txt:78 "1 - 10"
        raise Reject("messages", f"messages must have at most {d.messages_max} elements, got {len(messages)}")
    for i, message in enumerate(messages):
        _message(d, f"messages[{i}]", message)
    # powertokens.txt:87 "must contain at least one message that is not system or assistant"
    if d.needs_user_like and all(m["role"] in ("system", "assistant") for m in messages):
        raise Reject("messages", "messages must contain at least one message that is not system or assistant")


def _message(d: Dialect, where: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise Reject(where, f"{where} must be an object")
    role = message.get("role")
    # Dialect.roles: token360.txt:29, maxtoken.txt:117, OpenAI's set elsewhere; "developer" is
    # in none of them, so a gateway that forwards it is caught everywhere.
    if not isinstance(role, str) or role not in d.roles:
        allowed = ", ".join(sorted(d.roles))
        raise Reject(f"{where}.role", f"{where}.role must be one of {allowed}, got {role!r}")
    # token360.txt:39 "tool_call_id ... required for tool messages" (OpenAI requires it too)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise Reject(f"{where}.tool_call_id", f"{where}.tool_call_id is required for tool messages")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and (role != "assistant" or not isinstance(tool_calls, list)):
        raise Reject(f"{where}.tool_calls", f"{where}.tool_calls must be an array on an assistant message")
    content = message.get("content")
    # content kinds: Dialect.part_types / null_content_ok (token360.txt:31 string only,
    # toapis.txt:54 text only, maxtoken.txt:119 text/image_url/file, powertokens.txt:87)
    if content is None:
        if role == "assistant" and tool_calls and d.null_content_ok:
            return
        raise Reject(f"{where}.content", f"{where}.content is required")
    if isinstance(content, str):
        return
    if d.part_types is None:
        raise Reject(f"{where}.content", f"{where}.content must be a string")
    if not isinstance(content, list):
        raise Reject(f"{where}.content", f"{where}.content must be a string or an array of parts")
    for j, part in enumerate(content):
        _part(d, f"{where}.content[{j}]", part)


def _part(d: Dialect, where: str, part: Any) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in d.part_types:  # type: ignore[operator]
        allowed = ", ".join(sorted(d.part_types or ()))
        raise Reject(f"{where}.type", f"{where}.type must be one of {allowed}, got {kind!r}")
    payload = part.get(kind)
    if kind == "text":
        if not isinstance(payload, str):
            raise Reject(f"{where}.text", f"{where}.text must be a string")
    elif not isinstance(payload, dict):
        raise Reject(f"{where}.{kind}", f"{where}.{kind} must be an object")
    elif kind == "image_url" and not isinstance(payload.get("url"), str):
        raise Reject(f"{where}.image_url.url", f"{where}.image_url.url must be a string")


def _stop(d: Dialect, stop: Any) -> None:
    # Dialect.stop_string_ok / stop_max: powertokens.txt:122-126 (array, 1), maxtoken.txt:134
    # (array, 4), toapis.txt:95-96, siliconflow.txt:141 (4), token360.txt:61 (OpenAI's 4)
    if stop is None:
        return
    if isinstance(stop, str):
        if not d.stop_string_ok:
            raise Reject("stop", "stop must be an array of strings")
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise Reject("stop", "stop must be an array of strings")
    if len(stop) > d.stop_max:
        raise Reject("stop", f"stop must have at most {d.stop_max} sequences, got {len(stop)}")


def _tools(d: Dialect, tools: Any) -> None:
    if tools is None:
        return
    # Dialect.tool_types / tools_max: powertokens.txt:130-132, siliconflow.txt:195,
    # maxtoken.txt:133 (function, web search); OpenAI elsewhere, which rejects [] as well
    if not isinstance(tools, list) or not tools:
        raise Reject("tools", "tools must be a non-empty array")
    if len(tools) > d.tools_max:
        raise Reject("tools", f"tools must have at most {d.tools_max} elements, got {len(tools)}")
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in d.tool_types:
            allowed = ", ".join(sorted(d.tool_types))
            raise Reject(f"tools[{i}].type", f"tools[{i}].type must be one of {allowed}, got {kind!r}")
        if kind == "function":
            function = tool.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
                raise Reject(f"tools[{i}].function.name", f"tools[{i}].function.name is required")


def _tool_choice(d: Dialect, choice: Any) -> None:
    # powertokens.txt:134-140 enum with "auto" only; token360.txt:77 string | object; OpenAI elsewhere
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in d.tool_choice_strings:
            allowed = ", ".join(sorted(d.tool_choice_strings))
            raise Reject("tool_choice", f"tool_choice must be one of {allowed}, got {choice!r}")
        return
    if not d.tool_choice_object_ok:
        raise Reject("tool_choice", "tool_choice must be a string")
    function = choice.get("function") if isinstance(choice, dict) else None
    named = isinstance(function, dict) and isinstance(function.get("name"), str)
    if not named or choice.get("type") != "function":
        raise Reject("tool_choice", 'tool_choice object must be {"type": "function", "function": {"name": ...}}')


def _thinking(d: Dialect, body: dict[str, Any]) -> None:
    if d.thinking == "zhipu":  # token360.txt:67 enabled / disabled / auto; powertokens.txt:96-99
        thinking = body.get("thinking")
        if thinking is None:
            return
        if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "auto"):
            raise Reject("thinking.type", 'thinking must be {"type": "enabled" | "disabled" | "auto"}')
    elif d.thinking == "siliconflow":
        enable = body.get("enable_thinking")
        if enable is None:
            return
        if not isinstance(enable, bool):  # siliconflow.txt:97-98 "enable_thinking boolean"
            raise Reject("enable_thinking", "enable_thinking must be a boolean")
        # siliconflow.txt:100-113 "This field supports the following models"
        if body["model"] not in d.enable_thinking_models:
            raise Reject("enable_thinking", f"enable_thinking is not supported by model {body['model']}")
