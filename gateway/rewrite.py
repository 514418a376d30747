"""A request into one upstream's dialect: the body the upstream is sent, serialised once.

What changes (issue 4, "Rewrite" and "Decisions"): ``model`` becomes the upstream's model;
``stream`` is always sent explicitly; top-level ``null`` fields are left out (null means "not
given"); ``max_completion_tokens`` becomes ``max_tokens``; a string
``stop`` becomes a one-item list where the page types it as an array; the thinking forms become the
upstream's own; ``developer`` becomes ``system`` where no page documents it; text parts are joined
with "\\n" for string-only upstreams; ``content`` null or absent becomes "". Everything else, including
``reasoning_content`` on assistant messages, goes through untouched. Anything dropped or changed in
meaning is returned so the client can be told (``x-gateway-dropped``).
"""

from __future__ import annotations

from typing import Any

import orjson

from . import thinking
from .profiles import Profile
from .thinking import Intent

# Fields that would point the gateway somewhere else or carry a credential: never honoured, never
# forwarded (the SSRF that leaked LiteLLM's and Portkey's keys: issue 4, point 9).
CONTROL_FIELDS = ("api_base", "base_url", "api_key", "api_version", "extra_headers", "custom_llm_provider")


def _message(message: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The message as the upstream takes it; the same object when nothing changes."""
    role = message["role"]
    content = message.get("content")
    new_role = "system" if role == "developer" and not profile.developer_role else role
    if content is None:  # null or absent (an assistant turn with tool_calls): pages that type it need a string
        new_content: Any = ""
    elif isinstance(content, list) and profile.limits.content_string_only:
        new_content = "\n".join(part.get("text", "") for part in content)  # validate.py let only text through
    else:
        new_content = content
    if new_role is role and new_content is content:
        return message
    return {**message, "role": new_role, "content": new_content}


def _taken(out: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """The fields of ``names`` that ``out`` holds, taken out of it, in ``names``' order."""
    if out.keys().isdisjoint(names):  # the usual case: one call, not one per name
        return []
    return [name for name in names if out.pop(name, None) is not None]


def rewrite(body: dict[str, Any], intent: Intent, profile: Profile, model: str,
            stream: bool) -> tuple[bytes, list[str]]:
    # null means "not given" in OpenAI's API; some pages type the field (an array-only stop), so
    # nulls are not sent at all
    out = {name: value for name, value in body.items() if value is not None}
    dropped = _taken(out, CONTROL_FIELDS) + _taken(out, profile.foreign_fields)
    out["model"] = model
    out["stream"] = stream
    max_completion = out.pop("max_completion_tokens", None)
    if max_completion is not None:
        out["max_tokens"] = max_completion
    if isinstance(out.get("stop"), str) and profile.stop_as_list:
        out["stop"] = [out["stop"]]
    if stream and profile.stream_options:
        # usage feeds the token metrics; the relay strips the extra chunk if the client did not ask
        out["stream_options"] = {**(out.get("stream_options") or {}), "include_usage": True}
    else:  # undocumented upstream (the relay honours include_usage itself), or not a stream at all
        out.pop("stream_options", None)
    if not profile.thinking.passthrough:
        _taken(out, thinking.FIELDS)
        switchable = profile.thinking_models is None or model in profile.thinking_models
        fields, lost = thinking.render(intent, profile.thinking, body, switchable)
        out.update(fields)
        dropped += lost
    messages = body["messages"]
    rewritten = [_message(m, profile) for m in messages]
    if any(new is not old for new, old in zip(rewritten, messages, strict=True)):
        out["messages"] = rewritten
    return orjson.dumps(out), dropped
