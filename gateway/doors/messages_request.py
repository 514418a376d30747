"""Anthropic's Messages request -> a chat completion body (issue 12, "Request").

A pure translation: what a chat upstream can do is translated, what it cannot (server tools,
``cache_control``, ``container``, ...) is dropped and named so the client is told in
``x-gateway-dropped``; nothing here knows which upstream will take the body. Every chat message
remembers where it came from (``origins``), so a documented-limit rejection names the field as the
client sent it (``messages[2].content[1]``, ``stop_sequences``).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import InvalidRequest, quoted
from .translated import Request

#: where a ``tool_use`` input that was not a JSON object comes back (see messages_answer.py)
RAW_ARGUMENTS = "raw_arguments"

#: top-level fields with a chat equivalent, handled below; the rest is dropped and named
_TRANSLATED = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p",
                         "top_k", "metadata", "tools", "tool_choice", "thinking", "output_config", "stream"})
_EFFORTS = ("low", "medium", "high")


_NAMES = {"stop": "stop_sequences", "user": "metadata.user_id", "reasoning_effort": "output_config.effort",
          "thinking_budget": "thinking.budget_tokens", "parallel_tool_calls": "tool_choice"}


def to_chat(body: Any) -> Request:
    """The chat body for a Messages request; InvalidRequest (naming the client's field) when the
    request is not a Messages request."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model is required and must be a string", param="model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise InvalidRequest("max_tokens is required and must be an integer", param="max_tokens")
    out = Request({"model": body["model"], "max_tokens": max_tokens, "messages": []}, body["model"], origins=[],
                  names=_NAMES)
    chat = out.chat
    _system(body.get("system"), out)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages is required and must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        _message(message, f"messages[{i}]", out)
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            chat[name] = body[name]
    stop = body.get("stop_sequences")
    if stop is not None:
        chat["stop"] = stop
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id") is not None:
        chat["user"] = metadata["user_id"]
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]
        if body["stream"] is True:  # usage arrives in the last chunk, where the door needs it
            chat["stream_options"] = {"include_usage": True}
    _thinking(body, chat)
    _tools(body, out)
    out.dropped += sorted(name for name, value in body.items() if name not in _TRANSLATED and value is not None)
    return out


def _system(system: Any, out: Request) -> None:
    if system is None:
        return
    if isinstance(system, str):
        text = system
    elif isinstance(system, list) and all(isinstance(b, dict) and isinstance(b.get("text"), str) for b in system):
        _cache_control(system, out)
        text = "\n\n".join(b["text"] for b in system)
    else:
        raise InvalidRequest("system must be a string or an array of text blocks", param="system")
    out.add({"role": "system", "content": text}, "system")


def _cache_control(blocks: list[Any], out: Request) -> None:
    if "cache_control" not in out.dropped and any(isinstance(b, dict) and "cache_control" in b for b in blocks):
        out.dropped.append("cache_control")


def _message(message: Any, path: str, out: Request) -> None:
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system"):
        raise InvalidRequest(f"{path} must be an object with role user or assistant", param=f"{path}.role")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        out.add({"role": role, "content": content}, path)
        return
    if not isinstance(content, list) or not all(isinstance(b, dict) and isinstance(b.get("type"), str)
                                                for b in content):
        raise InvalidRequest(f"{path}.content must be a string or an array of content blocks",
                             param=f"{path}.content")
    _cache_control(content, out)
    if role == "assistant":
        _assistant(content, path, out)
    else:
        _user(role, content, path, out)


def _assistant(blocks: list[dict[str, Any]], path: str, out: Request) -> None:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind, where = block["type"], f"{path}.content[{j}]"
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "thinking":
            thinking = block.get("thinking")
            if not isinstance(thinking, str):
                raise InvalidRequest(f"{where}.thinking must be a string", param=f"{where}.thinking")
            # byte for byte, whatever its signature (ours, or one a client carried over from
            # elsewhere): GLM needs its own reasoning back in tool loops
            reasoning.append(thinking)
        elif kind == "redacted_thinking":
            out.drop("redacted_thinking")
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        else:
            raise InvalidRequest(f"{where}: an assistant turn cannot carry a {quoted(kind)} block",
                                 param=f"{where}.type")
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    out.add(message, path)


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise InvalidRequest(f"{where} needs a string id and name", param=where)
    value = block.get("input", {})
    if isinstance(value, dict) and set(value) == {RAW_ARGUMENTS} and isinstance(value[RAW_ARGUMENTS], str):
        arguments = value[RAW_ARGUMENTS]  # the model's own arguments, which were not an object, as they were
    else:
        arguments = orjson.dumps(value).decode()
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def _user(role: str, blocks: list[dict[str, Any]], path: str, out: Request) -> None:
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind, where = block["type"], f"{path}.content[{j}]"
        if kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise InvalidRequest(f"{where}.tool_use_id must be a string", param=f"{where}.tool_use_id")
            out.add({"role": "tool", "tool_call_id": block["tool_use_id"],
                       "content": _result_text(block, where, out)}, where)
        elif kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _source_url(block, where, "image")}})
        elif kind == "document":
            parts.append({"type": "file", "file": {"file_data": _source_url(block, where, "document")}})
        else:
            raise InvalidRequest(f"{where}: a {role} turn cannot carry a {quoted(kind)} block", param=f"{where}.type")
    if parts:  # text beside tool results follows them, as its own user turn
        content: Any = parts[0]["text"] if len(parts) == 1 and parts[0]["type"] == "text" else parts
        out.add({"role": role, "content": content}, path)


def _text(block: dict[str, Any], where: str) -> str:
    if not isinstance(block.get("text"), str):
        raise InvalidRequest(f"{where}.text must be a string", param=f"{where}.text")
    return block["text"]


def _result_text(block: dict[str, Any], where: str, out: Request) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for item in content:
            if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
                texts.append(item["text"])
            else:  # a chat tool message is text only
                out.drop("tool_result.content." + str(item.get("type") if isinstance(item, dict) else "?"))
        text = "\n\n".join(texts)
    else:
        raise InvalidRequest(f"{where}.content must be a string or an array of blocks", param=f"{where}.content")
    return f"[tool error] {text}" if block.get("is_error") is True else text


def _source_url(block: dict[str, Any], where: str, kind: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") if isinstance(source.get("media_type"), str) else "application/octet-stream"
        return f"data:{media};base64,{source['data']}"
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise InvalidRequest(f"{where}.source must be a base64 or url source for an {kind}", param=f"{where}.source")


def _thinking(body: dict[str, Any], chat: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is not None:
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind == "enabled":
            chat["thinking"] = {"type": "enabled"}
            budget = thinking.get("budget_tokens")
            if budget is not None:
                chat["thinking_budget"] = budget
        elif kind in ("disabled", "adaptive"):
            chat["thinking"] = {"type": "disabled" if kind == "disabled" else "auto"}
        else:
            raise InvalidRequest("thinking.type must be enabled, disabled or adaptive", param="thinking.type")
    config = body.get("output_config")
    if isinstance(config, dict) and config.get("effort") is not None:
        if config["effort"] not in _EFFORTS:
            raise InvalidRequest(f"output_config.effort must be one of {', '.join(_EFFORTS)}",
                                 param="output_config.effort")
        chat["reasoning_effort"] = config["effort"]
        # Claude Code sends adaptive thinking with an effort: the effort says how much, which a
        # chat upstream can act on; "auto" beside it would be a disagreement of thinking forms
        if chat.get("thinking") == {"type": "auto"}:
            del chat["thinking"]


def _tools(body: dict[str, Any], out: Request) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools must be an array", param="tools")
        functions = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise InvalidRequest(f"tools[{i}] must be an object with a name", param=f"tools[{i}]")
            if tool.get("type") not in (None, "custom"):  # a server tool: web_search_*, bash_*, ...
                out.drop(f"tools.{tool['type']}")
                continue
            if "cache_control" in tool:
                out.drop("cache_control")
            function = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
            if tool.get("description") is not None:
                function["description"] = tool["description"]
            functions.append({"type": "function", "function": function})
        if functions:
            out.chat["tools"] = functions
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice.get("name"), str):
        out.chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif kind in _TOOL_CHOICE:
        out.chat["tool_choice"] = _TOOL_CHOICE[kind]
    else:
        raise InvalidRequest("tool_choice.type must be auto, any, tool (with a name) or none", param="tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        out.chat["parallel_tool_calls"] = False


_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
