"""Stored responses (``store``, the Responses API's default): each Response and the conversation
it ends, in chat terms, kept in this process for a TTL, bounded in count and bytes, the oldest
dropped first (issue 13, "State"). An id carries the process that made it, so that under
``--workers N`` a ``previous_response_id`` another worker stored is told apart from an unknown one.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from typing import Any

import orjson


def new_response_id() -> str:
    return f"resp_{os.getpid():x}_{secrets.token_hex(10)}"


def made_here(response_id: str) -> bool:
    parts = response_id.split("_")
    return len(parts) == 3 and parts[1] == f"{os.getpid():x}"


class ResponseStore:
    def __init__(self, ttl: float = 3600.0, max_count: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.ttl, self.max_count, self.max_bytes = ttl, max_count, max_bytes
        self._entries: OrderedDict[str, tuple[float, bytes, bytes]] = OrderedDict()  # id -> (expires, response, turns)
        self._bytes = 0

    def put(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        """Keep ``response`` and the chat ``conversation`` it ends (serialised: what is stored cannot
        change, and its size is known)."""
        self.delete(response["id"])
        entry = (time.monotonic() + self.ttl, orjson.dumps(response), orjson.dumps(conversation))
        size = len(entry[1]) + len(entry[2])
        if size > self.max_bytes:
            return
        self._entries[response["id"]] = entry
        self._bytes += size
        while len(self._entries) > self.max_count or self._bytes > self.max_bytes:
            self._evict(next(iter(self._entries)))

    def response(self, response_id: str) -> dict[str, Any] | None:
        entry = self._fresh(response_id)
        return None if entry is None else orjson.loads(entry[1])

    def conversation(self, response_id: str) -> list[dict[str, Any]] | None:
        entry = self._fresh(response_id)
        return None if entry is None else orjson.loads(entry[2])

    def delete(self, response_id: str) -> bool:
        if response_id not in self._entries:
            return False
        self._evict(response_id)
        return True

    def _fresh(self, response_id: str) -> tuple[float, bytes, bytes] | None:
        entry = self._entries.get(response_id)
        if entry is not None and entry[0] < time.monotonic():
            self._evict(response_id)
            return None
        return entry

    def _evict(self, response_id: str) -> None:
        _, response, turns = self._entries.pop(response_id)
        self._bytes -= len(response) + len(turns)
