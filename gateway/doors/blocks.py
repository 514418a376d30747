"""A chat stream as a sequence of blocks, one open at a time: what both the Messages and the
Responses streams are made of (Anthropic's content blocks, OpenAI's output items).

A chat stream may interleave reasoning, text and tool-call fragments; the blocks a door sends
must not. A block closes when another kind starts, except that reasoning or text arriving while a
tool call is open waits for that call to close (its arguments must not be cut in two). Chat
upstreams stream tool calls one after another (OpenAI's contract), so a fragment of a call
already closed has no block to go to and is not sent.
"""

from __future__ import annotations

from typing import Any

import orjson

REASONING, TEXT, TOOL = "reasoning", "text", "tool"


def event(name: str, data: dict[str, Any]) -> bytes:
    """One named SSE event without its terminating blank line (the relay frames a read's events
    together)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data)


class Blocks:
    """Feed :meth:`feed` each parsed chat chunk; subclasses say what opening, extending and
    closing a block sends (each returns the events, without terminators)."""

    def __init__(self) -> None:
        self.open: str | None = None  # REASONING | TEXT | "tool:N" (N: the chat tool call's index)
        self.waiting: list[tuple[str, str]] = []
        self.closed_tools: set[int] = set()
        self.finish_reason: str | None = None
        self.usage: Any = None

    # what a door sends -------------------------------------------------------------------------
    def opened(self, kind: str, call: dict[str, Any] | None) -> list[bytes]:
        raise NotImplementedError

    def extended(self, kind: str, piece: str) -> list[bytes]:
        raise NotImplementedError

    def closed(self, kind: str) -> list[bytes]:
        raise NotImplementedError

    # the sequencing ----------------------------------------------------------------------------
    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for kind, key in ((REASONING, "reasoning_content"), (TEXT, "content")):
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
            self.finish_reason = choice["finish_reason"]
        return out

    def close_all(self) -> list[bytes]:
        out = self._close()
        out += self._flush_waiting()
        return out + self._close()

    def _piece(self, kind: str, piece: str) -> list[bytes]:
        out = [] if self.open == kind else self._close() + self._start(kind, None)
        return out + self.extended(kind, piece)

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        number = call.get("index") if isinstance(call.get("index"), int) else 0
        out: list[bytes] = []
        if self.open != f"tool:{number}":
            if number in self.closed_tools:
                return out
            out += self.close_all()
            out += self._start(f"tool:{number}", call)
        function = call.get("function")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str) and arguments:
            out += self.extended(TOOL, arguments)
        return out

    def _flush_waiting(self) -> list[bytes]:
        waiting, self.waiting = self.waiting, []
        out: list[bytes] = []
        for kind, piece in waiting:
            out += self._piece(kind, piece)
        return out

    def _start(self, block: str, call: dict[str, Any] | None) -> list[bytes]:
        self.open = block
        return self.opened(TOOL if block.startswith("tool:") else block, call)

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        block, self.open = self.open, None
        if block.startswith("tool:"):
            self.closed_tools.add(int(block[5:]))
        return self.closed(TOOL if block.startswith("tool:") else block)
