"""A chat answer -> Anthropic's Message, whole or as its event stream (issue 12, "Response").

Pure translations: the JSON answer is mapped in one call; a stream is a :class:`MessageEvents`
fed each parsed chat chunk as the relay sees it, answering with the events that chunk causes, at
once. Anthropic's blocks are strictly sequential: :mod:`gateway.doors.blocks` keeps them so.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from ..errors import GatewayError
from .blocks import REASONING, TEXT, Blocks, event
from .messages_request import RAW_ARGUMENTS
from .translated import as_object

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal", "sensitive": "refusal"}

_SIGNATURE_PREFIX = "glmgw.v1."


def signature(thinking: str) -> str:
    """A thinking block's signature: a versioned digest of its text. No secret: it carries only the
    client's own text, and a block comes back as reasoning whatever its signature says."""
    return _signed(hashlib.sha256(thinking.encode()))


def _signed(digest: Any) -> str:
    return _SIGNATURE_PREFIX + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as a ``tool_use`` input: arguments that are not a JSON object (models
    do produce them) come back whole under ``raw_arguments``, and go back upstream as they were."""
    if isinstance(arguments, str):
        try:
            value = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {RAW_ARGUMENTS: arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()}


def usage_of(usage: Any) -> dict[str, int]:
    """Chat usage in Anthropic's terms: cache reads are counted apart from the input tokens."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) else 0
    prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
    completion = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
    return {"input_tokens": max(prompt - cached, 0), "output_tokens": completion, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0}


def message_id(request_id: str) -> str:
    return f"msg_{request_id}"


def message(answer: dict[str, Any], model: str, request_id: str) -> dict[str, Any]:
    """The Message for a chat completion (its ``choices`` already checked to be a list)."""
    choice = answer["choices"][0] if answer["choices"] and isinstance(answer["choices"][0], dict) else {}
    said = as_object(choice.get("message"))
    content: list[dict[str, Any]] = []
    reasoning = said.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": signature(reasoning)})
    text = said.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for n, call in enumerate(said.get("tool_calls") or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{request_id}_{n}",
                            "name": function.get("name") or "", "input": tool_input(function.get("arguments"))})
    return {"id": message_id(request_id), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": usage_of(answer.get("usage"))}


PING = event("ping", {"type": "ping"})


class MessageEvents(Blocks):
    """Anthropic's event stream for one chat stream."""

    def __init__(self, model: str, request_id: str) -> None:
        super().__init__()
        self.model, self.request_id = model, request_id
        self.index = -1  # the open block's index, or the last one's
        self.thinking = hashlib.sha256()
        self.started = False

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events a parsed chat chunk causes."""
        out: list[bytes] = []
        if not self.started:
            self.started = True
            out.append(event("message_start", {"type": "message_start", "message": {
                "id": message_id(self.request_id), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage_of(None)}}))
        return out + self.feed(chunk)

    def end(self) -> list[bytes]:
        """The events that close the message once the chat stream is done."""
        out = self.close_all()
        stop_reason = STOP_REASONS.get(self.finish_reason or "stop", "end_turn")
        out.append(event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                           "usage": usage_of(self.usage)}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out

    def error(self, error: GatewayError) -> bytes:
        return event("error", error_envelope(error, self.request_id))

    def opened(self, kind: str, call: dict[str, Any] | None) -> list[bytes]:
        self.index += 1
        if kind == REASONING:
            self.thinking = hashlib.sha256()
            block: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
        elif kind == TEXT:
            block = {"type": "text", "text": ""}
        else:
            assert call is not None
            function = as_object(call.get("function"))
            block = {"type": "tool_use", "id": call.get("id") or f"toolu_{self.request_id}_{call.get('index', 0)}",
                     "name": function.get("name") or "", "input": {}}
        return [event("content_block_start", {"type": "content_block_start", "index": self.index,
                                              "content_block": block})]

    def extended(self, kind: str, piece: str) -> list[bytes]:
        if kind == REASONING:
            self.thinking.update(piece.encode())
            delta = {"type": "thinking_delta", "thinking": piece}
        elif kind == TEXT:
            delta = {"type": "text_delta", "text": piece}
        else:
            delta = {"type": "input_json_delta", "partial_json": piece}
        return [event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})]

    def closed(self, kind: str) -> list[bytes]:
        out = []
        if kind == REASONING:  # the signature comes last, before the thinking block stops
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                     "delta": {"type": "signature_delta",
                                                               "signature": _signed(self.thinking)}}))
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": self.index}))
        return out


#: Anthropic's error types by status (issue 12, "Errors")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
               408: "timeout_error"}


def error_envelope(error: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status) or ("invalid_request_error" if error.status < 500 else "api_error")
    envelope: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": error.message}}
    if request_id is not None:
        envelope["request_id"] = request_id
    return envelope
