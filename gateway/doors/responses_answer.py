"""A chat answer -> OpenAI's Response, whole or as its semantic event stream (issue 13, "Response").

Output items in order: ``reasoning`` (from ``reasoning_content``; its text as ``reasoning_text``
content, and encoded in ``encrypted_content`` when the client asked for it), ``message`` (one
``output_text`` part), ``function_call`` items (a flattened namespace tool's own ``name`` and
``namespace`` restored). A stream is a :class:`ResponseEvents` fed each parsed chat chunk; its
items are kept one at a time by :mod:`gateway.doors.blocks`.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import GatewayError
from .blocks import REASONING, TEXT, Blocks, event
from .responses_request import Needs, encrypted
from .translated import as_object

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter", "sensitive": "content_filter"}


def usage_of(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}

    def number(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt, completion = number(usage.get("prompt_tokens")), number(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = number(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = number(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": number(usage.get("total_tokens")) or prompt + completion}


class Items:
    """The Response being built, item by item: shared by the JSON answer and the stream."""

    def __init__(self, needs: Needs, model: str) -> None:
        self.needs, self.model = needs, model
        self.created = int(time.time())
        self.output: list[dict[str, Any]] = []

    def item_id(self, prefix: str) -> str:
        return f"{prefix}_{self.needs.id[5:]}_{len(self.output)}"

    def reasoning(self, text: str) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "reasoning", "id": self.item_id("rs"), "summary": [],
                                "content": [{"type": "reasoning_text", "text": text}]}
        if self.needs.encrypted:
            item["encrypted_content"] = encrypted(text)
        return item

    def message(self, text: str, status: str = "completed") -> dict[str, Any]:
        return {"type": "message", "id": self.item_id("msg"), "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}

    def call(self, call: dict[str, Any], arguments: str, status: str = "completed") -> dict[str, Any]:
        function = as_object(call.get("function"))
        name = str(function.get("name") or "")
        item: dict[str, Any] = {"type": "function_call", "id": self.item_id("fc"),
                                "call_id": call.get("id") or self.item_id("call"), "name": name,
                                "arguments": arguments, "status": status}
        if name in self.needs.namespaces:
            item["namespace"], item["name"] = self.needs.namespaces[name]
        return item

    def response(self, status: str, finish_reason: str | None = None, usage: Any = None,
                 error: GatewayError | None = None) -> dict[str, Any]:
        if status == "completed" and finish_reason in _INCOMPLETE:
            status = "incomplete"
        echo = self.needs.echo
        out: dict[str, Any] = {
            "id": self.needs.id, "object": "response", "created_at": self.created, "status": status,
            "model": self.model, "output": self.output, "error": None, "incomplete_details": None,
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "tool_choice": echo.get("tool_choice", "auto"), "tools": echo.get("tools", []), "store": self.needs.store,
            **{k: echo[k] for k in ("instructions", "max_output_tokens", "temperature", "top_p", "metadata")
               if k in echo}}
        if status == "incomplete":
            out["incomplete_details"] = {"reason": _INCOMPLETE[finish_reason or "length"]}
        if error is not None:
            out["error"] = {"code": error.code or "server_error", "message": error.message}
        if usage is not None or status != "in_progress":
            out["usage"] = usage_of(usage)
        return out


def response(answer: dict[str, Any], model: str, needs: Needs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Response for a chat completion (its ``choices`` already checked to be a list), and the
    assistant's chat message (what a stored conversation continues from)."""
    items = Items(needs, model)
    choice = as_object(answer["choices"][0]) if answer["choices"] else {}
    said = as_object(choice.get("message"))
    reasoning, text = said.get("reasoning_content"), said.get("content")
    if isinstance(reasoning, str) and reasoning:
        items.output.append(items.reasoning(reasoning))
    if isinstance(text, str) and text:
        items.output.append(items.message(text))
    for call in said.get("tool_calls") or ():
        if isinstance(call, dict):
            function = as_object(call.get("function"))
            arguments = function.get("arguments")
            items.output.append(items.call(call, arguments if isinstance(arguments, str) else ""))
    return items.response("completed", choice.get("finish_reason"), answer.get("usage")), assistant_turn(said)


def assistant_turn(said: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": said.get("content")}
    if said.get("reasoning_content"):
        message["reasoning_content"] = said["reasoning_content"]
    if said.get("tool_calls"):
        message["tool_calls"] = said["tool_calls"]
    return message


class ResponseEvents(Blocks):
    """The semantic event stream of one Response; ``finished`` is told the final Response and the
    assistant's chat message when the stream completes (the store keeps them)."""

    def __init__(self, needs: Needs, model: str, finished: Any = None) -> None:
        super().__init__()
        self.items = Items(needs, model)
        self.finished = finished
        self.sequence = 0
        self.started = False
        self.text = ""  # the open item's text or arguments so far
        self.call: dict[str, Any] = {}
        self.said: dict[str, Any] = {"content": None}  # the chat message, rebuilt as it streams

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event(kind, data)

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            skeleton = self.items.response("in_progress")
            out += [self._event("response.created", response=skeleton),
                    self._event("response.in_progress", response=skeleton)]
        return out + self.feed(chunk)

    def end(self) -> list[bytes]:
        out = self.close_all()
        final = self.items.response("completed", self.finish_reason, self.usage)
        if self.finished is not None:
            self.finished(final, assistant_turn(self.said))
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return [*out, self._event(kind, response=final)]

    def error(self, error: GatewayError) -> bytes:
        return self._event("response.failed", response=self.items.response("failed", usage=self.usage, error=error))

    @property
    def _index(self) -> int:
        return len(self.items.output)

    def opened(self, kind: str, call: dict[str, Any] | None) -> list[bytes]:
        self.text = ""
        if kind == REASONING:
            item = {**self.items.reasoning(""), "content": []}
            item.pop("encrypted_content", None)
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        elif kind == TEXT:
            item = {**self.items.message("", "in_progress"), "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        else:
            assert call is not None
            self.call = call
            item = self.items.call(call, "", "in_progress")
            return [self._event("response.output_item.added", output_index=self._index, item=item)]
        return [self._event("response.output_item.added", output_index=self._index, item=item),
                self._event("response.content_part.added", item_id=item["id"], output_index=self._index,
                            content_index=0, part=part)]

    def extended(self, kind: str, piece: str) -> list[bytes]:
        self.text += piece
        item_id = self._open_id(kind)
        if kind == REASONING:
            return [self._event("response.reasoning_text.delta", item_id=item_id, output_index=self._index,
                                content_index=0, delta=piece)]
        if kind == TEXT:
            return [self._event("response.output_text.delta", item_id=item_id, output_index=self._index,
                                content_index=0, delta=piece, logprobs=[])]
        return [self._event("response.function_call_arguments.delta", item_id=item_id, output_index=self._index,
                            delta=piece)]

    def closed(self, kind: str) -> list[bytes]:
        index, text = self._index, self.text
        if kind == REASONING:
            item = self.items.reasoning(text)
            part = item["content"][0]
            out = [self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                               content_index=0, text=text),
                   self._event("response.content_part.done", item_id=item["id"], output_index=index,
                               content_index=0, part=part)]
            self.said["reasoning_content"] = self.said.get("reasoning_content", "") + text
        elif kind == TEXT:
            item = self.items.message(text)
            part = item["content"][0]
            out = [self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                               text=text, logprobs=[]),
                   self._event("response.content_part.done", item_id=item["id"], output_index=index,
                               content_index=0, part=part)]
            self.said["content"] = (self.said["content"] or "") + text
        else:
            item = self.items.call(self.call, text)
            out = [self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               arguments=text)]
            function = as_object(self.call.get("function"))
            self.said.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function", "function": {"name": function.get("name") or "",
                                                                         "arguments": text}})
        self.items.output.append(item)
        return [*out, self._event("response.output_item.done", output_index=index, item=item)]

    def _open_id(self, kind: str) -> str:
        prefix = {REASONING: "rs", TEXT: "msg"}.get(kind, "fc")
        return self.items.item_id(prefix)
