"""Stored responses (``store``, the Responses API's default): each Response and the conversation
it ends, in chat terms, kept in this process for a TTL, bounded in count and bytes, the oldest
dropped first (issue 13, "State"). An id carries the process that made it, so that under
``--workers N`` without a shared store a ``previous_response_id`` another worker stored is told
apart from an unknown one.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from typing import Protocol


def new_response_id() -> str:
    return f"resp_{os.getpid():x}_{secrets.token_hex(10)}"


def made_here(response_id: str) -> bool:
    parts = response_id.split("_")
    return len(parts) == 3 and parts[1] == f"{os.getpid():x}"


class StoredResponses(Protocol):
    async def put_response(self, response_id: str, owner: str, response: bytes, conversation: bytes,
                           ttl: float) -> None: ...

    async def get_response(self, response_id: str, owner: str) -> tuple[bytes, bytes] | None: ...

    async def delete_response(self, response_id: str, owner: str) -> bool: ...


class ResponseStore:
    """The in-process store; with ``GATEWAY_REDIS_URL`` the shared state (gateway/state/redis.py)
    takes its place, with the same three methods. A response belongs to the key that created it:
    for any other key it does not exist (issue 14)."""

    def __init__(self, ttl: float = 3600.0, max_count: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.ttl, self.max_count, self.max_bytes = ttl, max_count, max_bytes
        # id -> (expires, owner, response, conversation)
        self._entries: OrderedDict[str, tuple[float, str, bytes, bytes]] = OrderedDict()
        self._bytes = 0

    async def put_response(self, response_id: str, owner: str, response: bytes, conversation: bytes,
                           ttl: float) -> None:
        """Keep a Response and the chat conversation it ends, serialised (what is stored cannot
        change, and its size is known)."""
        self._evict(response_id)
        size = len(response) + len(conversation)
        if size > self.max_bytes:
            return
        self._entries[response_id] = (time.monotonic() + ttl, owner, response, conversation)
        self._bytes += size
        while len(self._entries) > self.max_count or self._bytes > self.max_bytes:
            self._evict(next(iter(self._entries)))

    async def get_response(self, response_id: str, owner: str) -> tuple[bytes, bytes] | None:
        entry = self._entries.get(response_id)
        if entry is None or entry[1] != owner:
            return None
        if entry[0] < time.monotonic():
            self._evict(response_id)
            return None
        return entry[2], entry[3]

    async def delete_response(self, response_id: str, owner: str) -> bool:
        if await self.get_response(response_id, owner) is None:
            return False
        self._evict(response_id)
        return True

    def _evict(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self._bytes -= len(entry[2]) + len(entry[3])
