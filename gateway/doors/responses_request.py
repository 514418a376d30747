"""OpenAI's Responses request -> a chat completion body (issue 13, "Request").

A pure translation like the Messages door's: ``input`` items become chat messages (each
remembering its ``input[i]`` path for error messages), hosted tools and fields a chat upstream
cannot honour are dropped and named, and what the answer needs back (the namespace of each
flattened tool, whether to store, whether to hand reasoning back encoded) travels as
:class:`Needs`. Stored conversations (``previous_response_id``) are looked up by the caller.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import InvalidRequest, quoted
from .translated import Request

#: the Responses field each chat field comes from, for error messages
_NAMES = {"max_tokens": "max_output_tokens", "reasoning_effort": "reasoning.effort", "response_format": "text.format"}
#: accepted and never sent upstream (the API's own bookkeeping, or nothing a chat upstream can use)
_ACCEPTED = frozenset({"user", "metadata", "prompt_cache_key", "client_metadata", "include", "truncation",
                       "service_tier", "store", "safety_identifier", "prompt_cache_retention", "stream_options",
                       "previous_response_id"})
_TRANSLATED = frozenset({"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stop",
                         "reasoning", "text", "tools", "tool_choice", "parallel_tool_calls", "stream"})
_UNSUPPORTED = {"background": "background responses are not supported: the gateway answers while you wait",
                "conversation": "conversation objects are not supported; use previous_response_id"}
_EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh"}
_LEGAL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
ENCRYPTED_PREFIX = "glmgw.v1."


@dataclass
class Needs:
    """What the answer needs from the request."""

    id: str = ""  # the Response's id, made before the request is sent
    owner: str = ""  # the key that asked: a stored Response is its own
    namespaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # chat name -> (namespace, name)
    store: bool = True
    encrypted: bool = False  # the client asked for reasoning.encrypted_content
    previous: list[dict[str, Any]] = field(default_factory=list)  # the stored conversation it continues
    instructions: str | None = None
    echo: dict[str, Any] = field(default_factory=dict)  # request fields a Response repeats


def encrypted(reasoning: str) -> str:
    """A reasoning item's ``encrypted_content``: a plain versioned encoding, read back when the item
    returns. No secret: it carries only the client's own reasoning."""
    return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(reasoning.encode()).decode()


def decrypted(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(ENCRYPTED_PREFIX):
        return None
    try:
        return base64.urlsafe_b64decode(value[len(ENCRYPTED_PREFIX):].encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def flat_name(namespace: str, name: str) -> str:
    """A namespace tool's function name as a chat upstream takes it: ``[a-zA-Z0-9_-]{1,64}``."""
    flat = _LEGAL_NAME.sub("_", f"{namespace}__{name}")
    if len(flat) > 64:
        flat = flat[:55] + "_" + hashlib.sha256(flat.encode()).hexdigest()[:8]
    return flat


def to_chat(body: Any, previous: list[dict[str, Any]] | None = None) -> Request:
    """The chat body for a Responses request; ``previous``: the stored conversation of its
    ``previous_response_id``, already looked up."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    for name, why in _UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise InvalidRequest(f"{name}: {why}", param=name)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model is required and must be a string", param="model")
    include = body.get("include")
    needs = Needs(store=body.get("store") is not False, previous=list(previous or ()),
                  encrypted=isinstance(include, list) and "reasoning.encrypted_content" in include)
    out = Request({"model": body["model"], "messages": []}, body["model"], origins=[], names=_NAMES, state=needs)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("instructions must be a string", param="instructions")
        needs.instructions = instructions
        out.add({"role": "system", "content": instructions}, "instructions")
    for message in needs.previous:
        out.add(message, "previous_response_id")
    _tools(body, out, needs)
    _input(body.get("input"), out, needs)
    if not out.chat["messages"] or all(m["role"] == "system" for m in out.chat["messages"]):
        raise InvalidRequest("input is required: a string or a non-empty array of items", param="input")
    _parameters(body, out)
    out.dropped += sorted(n for n, v in body.items()
                          if n not in _TRANSLATED and n not in _ACCEPTED and v is not None)
    needs.echo = {k: body[k] for k in ("instructions", "max_output_tokens", "temperature", "top_p", "tool_choice",
                                       "parallel_tool_calls", "metadata", "tools") if body.get(k) is not None}
    return out


def _parameters(body: dict[str, Any], out: Request) -> None:
    chat = out.chat
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "stop", "parallel_tool_calls"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]
        if body["stream"] is True:
            chat["stream_options"] = {"include_usage": True}
    reasoning = body.get("reasoning")
    if reasoning is not None:
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        if effort is not None:
            if effort not in _EFFORTS:
                raise InvalidRequest(f"reasoning.effort must be one of {', '.join(sorted(_EFFORTS))}",
                                     param="reasoning.effort")
            chat["reasoning_effort"] = "high" if effort == "xhigh" else effort
    text = body.get("text")
    if isinstance(text, dict):
        fmt = text.get("format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_object":
            chat["response_format"] = {"type": "json_object"}
        elif kind == "json_schema":
            assert isinstance(fmt, dict)
            schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
            chat["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif kind not in (None, "text"):
            raise InvalidRequest(f"text.format.type {quoted(kind)} is not text, json_object or json_schema",
                                 param="text.format.type")
        if text.get("verbosity") is not None:
            out.drop("text.verbosity")


def _tools(body: dict[str, Any], out: Request, needs: Needs) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools must be an array", param="tools")
        functions: list[dict[str, Any]] = []
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind == "function":
                functions.append(_function(tool, f"tools[{i}]", None, needs))
            elif kind == "namespace" and isinstance(tool.get("tools"), list):
                for j, inner in enumerate(tool["tools"]):
                    if isinstance(inner, dict) and inner.get("type", "function") == "function":
                        functions.append(_function(inner, f"tools[{i}].tools[{j}]", str(tool.get("name", "")), needs))
            elif isinstance(kind, str):  # hosted: web_search, file_search, code_interpreter, mcp, ...
                out.drop(f"tools.{kind}")
            else:
                raise InvalidRequest(f"tools[{i}] must be an object with a type", param=f"tools[{i}]")
        if functions:
            out.chat["tools"] = functions
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        out.chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        name = choice["name"]
        if isinstance(choice.get("namespace"), str):
            name = flat_name(choice["namespace"], name)
        out.chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif choice is not None:
        out.drop("tool_choice")  # a hosted tool, or allowed_tools: nothing a chat upstream can be told


def _function(tool: dict[str, Any], where: str, namespace: str | None, needs: Needs) -> dict[str, Any]:
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise InvalidRequest(f"{where}.name is required", param=f"{where}.name")
    name = tool["name"]
    if namespace is not None:
        name = flat_name(namespace, tool["name"])
        needs.namespaces[name] = (namespace, tool["name"])
    function: dict[str, Any] = {"name": name, "parameters": tool.get("parameters") or {"type": "object"}}
    for key in ("description", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _input(items: Any, out: Request, needs: Needs) -> None:
    if isinstance(items, str):
        out.add({"role": "user", "content": items}, "input")
        return
    if not isinstance(items, list):
        raise InvalidRequest("input must be a string or an array of items", param="input")
    reasoning: list[str] = []  # reasoning items waiting for the assistant turn that follows them
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            _message(item, where, out, reasoning)
        elif kind == "reasoning":
            reasoning.append(_reasoning_text(item))
        elif kind == "function_call":
            _call(item, where, out, reasoning)
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise InvalidRequest(f"{where}.call_id must be a string", param=f"{where}.call_id")
            out.add({"role": "tool", "tool_call_id": item["call_id"], "content": _output_text(item.get("output"))},
                    where)
        elif isinstance(kind, str):  # a hosted tool's call or result: nothing a chat upstream can read
            out.drop(f"input.{kind}")
        else:
            raise InvalidRequest(f"{where} must be an object with a type", param=where)


def _message(item: dict[str, Any], where: str, out: Request, reasoning: list[str]) -> None:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise InvalidRequest(f"{where}.role must be user, system, developer or assistant", param=f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        parts: Any = content
    elif isinstance(content, list):
        parts = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
        if all(p["type"] == "text" for p in parts):  # text only: one string, which every page takes
            parts = "\n".join(p["text"] for p in parts)
    else:
        raise InvalidRequest(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
    message: dict[str, Any] = {"role": role, "content": parts}
    if role == "assistant" and reasoning:
        message["reasoning_content"] = "".join(reasoning)
        reasoning.clear()
    out.add(message, where)


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "image_url", "image_url": {"url": part["image_url"]}}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file = {"file_data": part["file_data"], **({"filename": part["filename"]} if part.get("filename") else {})}
        return {"type": "file", "file": file}
    if kind in ("input_image", "input_file"):
        raise InvalidRequest(f"{where}: only inline {kind} (image_url / file_data) can be sent on; file ids need "
                             "the Files API, which no upstream here has", param=where)
    raise InvalidRequest(f"{where}: {quoted(kind)} is not a content part a chat upstream takes", param=where)


def _call(item: dict[str, Any], where: str, out: Request, reasoning: list[str]) -> None:
    if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
        raise InvalidRequest(f"{where} needs a string call_id and name", param=where)
    name = flat_name(item["namespace"], item["name"]) if isinstance(item.get("namespace"), str) else item["name"]
    arguments = item.get("arguments")
    call = {"id": item["call_id"], "type": "function",
            "function": {"name": name, "arguments": arguments if isinstance(arguments, str)
                         else orjson.dumps(arguments or {}).decode()}}
    messages = out.chat["messages"]
    last = messages[-1] if messages else None
    # consecutive calls, and the assistant text just before them, are one assistant turn
    assert out.origins is not None
    if last is not None and last["role"] == "assistant" and not reasoning and out.origins[-1] != "previous_response_id":
        last.setdefault("tool_calls", []).append(call)
        return
    message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
        reasoning.clear()
    out.add(message, where)


def _reasoning_text(item: dict[str, Any]) -> str:
    """A reasoning item's text: our own encoding when it is one, else its content (summary last)."""
    text = decrypted(item.get("encrypted_content"))
    if text is not None:
        return text
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list):
            texts = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]
            if texts:
                return "".join(texts)
    return ""


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(p["text"] for p in output if isinstance(p, dict) and isinstance(p.get("text"), str))
    return orjson.dumps(output).decode()
