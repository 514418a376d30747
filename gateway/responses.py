"""Whole responses written straight to ASGI ``send``: errors in the OpenAI envelope, small JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .errors import GatewayError

Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError, headers: Headers | None = None,
                     body: bytes | None = None) -> None:
    """The error in OpenAI's envelope, or in the ``body`` a front door made of it."""
    extra = [*(headers or ()), *((k.lower().encode(), v.encode()) for k, v in error.headers.items())]
    await send_bytes(send, error.status, error.body() if body is None else body, extra, b"application/json")
