"""The Python floor: a raw-ASGI pass-through, the best any proxy on uvicorn + aiohttp can do.

    FLOOR_UPSTREAM=http://127.0.0.1:PORT uvicorn bench.floor:app --loop uvloop --http httptools

No validation, no rewriting: the body goes up as it came, the reply comes back chunk by chunk.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8081")
_FORWARD = {b"content-type", b"authorization", b"accept"}
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        if _session is not None:
            await _session.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if _session is None:
        # limit=0: no pool cap, or 1,000 open streams would queue behind aiohttp's default of 100.
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in _FORWARD}
    async with _session.request(scope["method"], UPSTREAM + scope["path"], data=body, headers=headers) as resp:
        out = [(b"content-type", resp.headers.get("Content-Type", "application/json").encode())]
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
