"""The client's side of a request: its id and length from the headers, its body (bounded), and
a watch on the client going away while the upstream works."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import PayloadTooLarge
from .exchange import Exchange

Receive = Callable[[], Awaitable[dict[str, Any]]]


class DisconnectWatcher:
    """Cancels the request's task when the client goes away, so the upstream request ends at once.

    The watching task starts only once a request has run for ``ARM_AFTER`` seconds: a task per
    request cost 9% of the gateway's throughput in bench/, and a request answered sooner has
    nothing left to cancel. Streams and thinking models run for seconds, so they are always watched.
    """

    ARM_AFTER = 0.05
    __slots__ = ("_receive", "_exchange", "_task", "_owner", "_timer", "disconnected")

    def __init__(self, receive: Receive, exchange: Exchange) -> None:
        self._receive = receive
        self._exchange = exchange
        self._task: asyncio.Task[None] | None = None
        self._owner: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.disconnected = False

    def arm(self) -> None:
        self._owner = asyncio.current_task()
        self._timer = asyncio.get_running_loop().call_later(self.ARM_AFTER, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._owner is not None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        # Once the response is complete the server reports a disconnect too (uvicorn does): the
        # client has every byte, and what is left (reading the upstream's body end so that its
        # connection is reused) must finish, not be cut off as a 499 (issue 9, point 1). This
        # relies on the relay setting ``ended`` right after its last send, with no await between.
        # A client that goes in the same loop turn as that last send is counted a 200: uvicorn's
        # send() drops bytes silently once the client is gone, and nothing tells the two apart.
        if self._owner is not None and self._exchange.ended is None:
            self.disconnected = True
            self._owner.cancel()

    def stop(self) -> None:
        self._owner = None
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


class ClientLeft(Exception):
    """The client went away before its request was in hand: nobody to answer."""


# A client's request id is sent upstream and logged: printable, bounded, or replaced by our own.
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_id() -> str:
    """Unique within the process's life and across processes (random prefix), cheaper than uuid4."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):020x}"


def id_and_length(scope: dict[str, Any]) -> tuple[str | None, str | None]:
    """The client's x-request-id and content-length, in one pass over the headers."""
    request_id = length = None
    for key, value in scope["headers"]:
        if key == b"x-request-id" and _SAFE_ID.fullmatch(value):
            request_id = value.decode()
        elif key == b"content-length":
            length = value.decode("latin-1")
    return request_id, length


async def read_body(receive: Receive, length: str | None, limit: int) -> bytes:
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body is {length} bytes, more than the {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is more than the {limit} bytes allowed")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)

