"""Writing responses over raw ASGI: pacing, SSE faults (reset, stall, malformed, error), split and dripped writes."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .answers import DONE_EVENT, KEEPALIVE, MALFORMED_EVENT
from .knobs import Knobs

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

STALL_MAX_S = 300.0
SPLIT_PAUSE_S = 0.001

# A deliberate reset is the app returning mid-body: uvicorn then closes the connection and logs
# "ASGI callable returned without completing response." This flag, read by a filter on uvicorn's
# logger in the same task, silences that one expected line and nothing else.
_aborting: contextvars.ContextVar[bool] = contextvars.ContextVar("sim_aborting", default=False)


class _DropDeliberateAborts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _aborting.get()


_FILTER = _DropDeliberateAborts()


def install_log_filter() -> None:
    logging.getLogger("uvicorn.error").addFilter(_FILTER)  # addFilter ignores duplicates


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Pacer:
    """Sleeps that end early when the client goes away, so an abandoned stream stops at once.

    The disconnect watcher task is created on the first real sleep only: an answer with no delay
    costs nothing extra.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watch: asyncio.Future[None] | None = None
        self.gone = False

    async def sleep(self, seconds: float) -> bool:
        """Sleep; False if the client disconnected meanwhile."""
        if self.gone:
            return False
        if seconds <= 0:
            return True
        if self._watch is None:
            self._watch = asyncio.ensure_future(_until_disconnect(self._receive))
        done, _ = await asyncio.wait((self._watch,), timeout=seconds)
        self.gone = bool(done)
        return not self.gone

    def close(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()


class BodyWriter:
    """Body writes as the knobs cut them: whole, in 3 pieces (``split``), or with drip_ms set one
    byte per write, drip_ms before each byte of the body but its first (drip wins over split)."""

    def __init__(self, send: Send, pacer: Pacer, knobs: Knobs, *, split: bool = False) -> None:
        self._send = send
        self._pacer = pacer
        self._drip = None if knobs.drip_ms is None else knobs.drip_ms / 1000
        self._split = split
        self._dripped = False

    async def write(self, data: bytes, more_body: bool = True) -> bool:
        """False if the client left meanwhile."""
        if self._drip is not None and data:
            return await self._trickle(data, self._drip, more_body)
        pieces = _pieces(data) if self._split else [data]
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            if i and not await self._pacer.sleep(SPLIT_PAUSE_S):
                return False
            await self._body(piece, more_body or i < last)
        return True

    async def _trickle(self, data: bytes, pause: float, more_body: bool) -> bool:
        last = len(data) - 1
        for i in range(len(data)):
            if self._dripped and not await self._pacer.sleep(pause):
                return False
            self._dripped = True
            await self._body(data[i : i + 1], more_body or i < last)
        return True

    async def _body(self, data: bytes, more_body: bool) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more_body})


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers, writer: BodyWriter | None = None) -> None:
    """A whole response with its content-length; the body through writer when given."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    if writer is None:
        await send({"type": "http.response.body", "body": body})
    else:
        await writer.write(body, more_body=False)


def _pieces(data: bytes) -> list[bytes]:
    """Two or three pieces cut inside the first line, so no piece is a whole event."""
    n = len(data)
    if n < 3:
        return [data]
    return [data[: n // 3], data[n // 3 : 2 * n // 3], data[2 * n // 3 :]]


class _SseWriter:
    def __init__(self, send: Send, pacer: Pacer, knobs: Knobs) -> None:
        self._pacer = pacer
        self._knobs = knobs
        self._body = BodyWriter(send, pacer, knobs, split=knobs.split_writes)
        self._first = True

    async def event(self, data: bytes) -> bool:
        """One event, after the inter-event delay and the optional keep-alive comment."""
        if not self._first and not await self._pacer.sleep(self._knobs.chunk_delay_ms / 1000):
            return False
        self._first = False
        if self._knobs.keepalive and not await self._body.write(KEEPALIVE):
            return False
        return await self._body.write(data)


def sse_event(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


async def stream_events(
    send: Send, pacer: Pacer, events: list[bytes], knobs: Knobs, headers: Headers, error_body: bytes = b""
) -> None:
    """Send a 200 SSE response: events, then [DONE], with the faults the knobs ask for.

    Fault positions count the answer's own events (keep-alives and the malformed one excluded)
    and are clamped to the number of events, so a fault always happens, at the latest just before
    [DONE]. ``error_body`` is the data of error_after's event (used only when it is set).
    """
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    total = len(events)

    def at(value: int | None) -> int | None:
        return None if value is None else min(value, total)

    reset_at, stall_at, malformed_at = at(knobs.reset_after), at(knobs.stall_after), at(knobs.malformed_after)
    error_at = at(knobs.error_after)
    writer = _SseWriter(send, pacer, knobs)
    for index in range(total + 1):
        if index == reset_at:
            _aborting.set(True)
            return
        if index == stall_at:
            await pacer.sleep(STALL_MAX_S)
            _aborting.set(True)
            return
        if index == malformed_at and not await writer.event(MALFORMED_EVENT):
            return
        if index == error_at:
            if not await writer.event(sse_event(error_body)):
                return
            break  # the error is the last event: the body ends normally, with no [DONE]
        if not await writer.event(events[index] if index < total else DONE_EVENT):
            return
    await send({"type": "http.response.body", "body": b"", "more_body": False})
