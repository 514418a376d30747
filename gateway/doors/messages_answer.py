"""A chat answer -> Anthropic's Message, whole or as its event stream (issue 12, "Response").

Pure translations: the JSON answer is mapped in one call; a stream is a :class:`MessageEvents`
fed each parsed chat chunk as the relay sees it, answering with the events that chunk causes, at
once. Anthropic's blocks are strictly sequential (one open at a time, in index order), while a chat
stream may interleave reasoning, text and tool-call fragments: a block is closed when another kind
starts, except that text or reasoning arriving while a tool call is open waits for that call to
close (its arguments must not be cut in two).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from ..errors import GatewayError
from .messages_request import RAW_ARGUMENTS

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


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def message_id(request_id: str) -> str:
    return f"msg_{request_id}"


def message(answer: dict[str, Any], model: str, request_id: str) -> dict[str, Any]:
    """The Message for a chat completion (its ``choices`` already checked to be a list)."""
    choice = answer["choices"][0] if answer["choices"] and isinstance(answer["choices"][0], dict) else {}
    said = _object(choice.get("message"))
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


def event(name: str, data: dict[str, Any]) -> bytes:
    """One event without its terminating blank line (the relay frames a read's events together)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data)


PING = event("ping", {"type": "ping"})


class MessageEvents:
    """Anthropic's event stream for one chat stream."""

    def __init__(self, model: str, request_id: str) -> None:
        self.model, self.request_id = model, request_id
        self.index = -1  # the open block's index, or the last one's
        self.open: str | None = None  # "thinking" | "text" | "tool:N" (N: the chat tool call index)
        self.thinking = hashlib.sha256()
        self.waiting: list[tuple[str, str]] = []  # text/reasoning that arrived while a tool call was open
        self.closed_tools: set[int] = set()
        self.stop_reason: str | None = None
        self.usage: dict[str, int] = usage_of(None)
        self.started = False

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events a parsed chat chunk causes."""
        out: list[bytes] = []
        if not self.started:
            self.started = True
            out.append(event("message_start", {"type": "message_start", "message": {
                "id": message_id(self.request_id), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": None, "stop_sequence": None, "usage": self.usage}}))
        if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
            self.usage = usage_of(chunk["usage"])
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for kind, key in (("thinking", "reasoning_content"), ("text", "content")):
                piece = delta.get(key)
                if isinstance(piece, str) and piece:
                    if self.open is not None and self.open.startswith("tool:"):
                        self.waiting.append((kind, piece))
                    else:
                        out += self._piece(kind, piece)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out += self._tool(call)
        if choice.get("finish_reason"):
            self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def end(self) -> list[bytes]:
        """The events that close the message once the chat stream is done."""
        out = self._close()
        out += self._flush_waiting()
        out += self._close()
        out.append(event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": self.stop_reason or "end_turn",
                                                     "stop_sequence": None}, "usage": self.usage}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out

    def error(self, error: GatewayError) -> bytes:
        return event("error", error_envelope(error, self.request_id))

    def _piece(self, kind: str, piece: str) -> list[bytes]:
        out = [] if self.open == kind else self._close() + self._start(kind)
        if kind == "thinking":
            self.thinking.update(piece.encode())
            delta = {"type": "thinking_delta", "thinking": piece}
        else:
            delta = {"type": "text_delta", "text": piece}
        out.append(event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}))
        return out

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        number = call.get("index") if isinstance(call.get("index"), int) else 0
        function = _object(call.get("function"))
        out: list[bytes] = []
        if self.open != f"tool:{number}":
            if number in self.closed_tools:
                # a fragment of a call closed when the next began: chat upstreams stream calls one
                # after another (OpenAI's contract), so this is a broken stream with no block to go to
                return out
            out += self._close() + self._flush_waiting()
            out += self._close()
            self.index += 1
            self.open = f"tool:{number}"
            out.append(event("content_block_start", {"type": "content_block_start", "index": self.index,
                                                     "content_block": {
                                                         "type": "tool_use",
                                                         "id": call.get("id") or f"toolu_{self.request_id}_{number}",
                                                         "name": function.get("name") or "", "input": {}}}))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                     "delta": {"type": "input_json_delta",
                                                               "partial_json": arguments}}))
        return out

    def _flush_waiting(self) -> list[bytes]:
        waiting, self.waiting = self.waiting, []
        out: list[bytes] = []
        for kind, piece in waiting:
            out += self._piece(kind, piece)
        return out

    def _start(self, kind: str) -> list[bytes]:
        self.index += 1
        self.open = kind
        block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {"type": "text",
                                                                                                  "text": ""}
        if kind == "thinking":
            self.thinking = hashlib.sha256()
        return [event("content_block_start", {"type": "content_block_start", "index": self.index,
                                              "content_block": block})]

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        out = []
        if self.open == "thinking":
            out.append(event("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                     "delta": {"type": "signature_delta",
                                                               "signature": _signed(self.thinking)}}))
        elif self.open.startswith("tool:"):
            self.closed_tools.add(int(self.open[5:]))
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": self.index}))
        self.open = None
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
