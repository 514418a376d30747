"""Small upstreams for what the simulators do not cover: a redirect, an oversized SSE event, slow
answers that notice when the gateway hangs up, invented values, a lingering body end, and an
OpenAI-style upstream that honours stream_options.include_usage."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _start_sse(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})


class Redirecting:
    def __init__(self) -> None:
        self.hits = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await _body(receive)
        self.hits += 1
        await send({"type": "http.response.start", "status": 307,
                    "headers": [(b"location", b"http://127.0.0.1:9/v1/chat/completions")]})
        await send({"type": "http.response.body", "body": b""})


class HugeEvent:
    """One normal event, then a single event of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await _body(receive)
        await _start_sse(send)
        await send({"type": "http.response.body", "more_body": True,
                    "body": b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'})
        filler = b"x" * self.size
        await send({"type": "http.response.body", "more_body": True,
                    "body": b'data: {"choices":[{"index":0,"delta":{"content":"' + filler + b'"}}]}\n\n'})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


class SlowStream:
    """Streams an event every 50 ms for up to 10 s; records when its client went away."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self.events_sent = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await _body(receive)
        await _start_sse(send)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.gone.set()

        watcher = asyncio.create_task(watch())
        for _ in range(200):
            if self.gone.is_set():
                break
            await send({"type": "http.response.body", "more_body": True,
                        "body": b'data: {"choices":[{"index":0,"delta":{"content":"w "}}]}\n\n'})
            self.events_sent += 1
            await asyncio.sleep(0.05)
        watcher.cancel()


class Inventive:
    """Answers with values no page documents (finish reasons, usage fields) and rate-limit headers."""

    JSON = (b'{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":'
            b'{"role":"assistant","content":"hm"},"finish_reason":"sensitive"}],"usage":{"prompt_tokens":1,'
            b'"completion_tokens":1,"total_tokens":2,"web_search_tokens":7}}')
    SSE = (b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
           b'"delta":{"content":"hm"},"finish_reason":null}]}\n\n'
           b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
           b'"delta":{},"finish_reason":"network_error"}],"usage":{"prompt_tokens":1,"completion_tokens":1,'
           b'"total_tokens":2,"web_search_tokens":7}}\n\ndata: [DONE]\n\n')
    HEADERS = [(b"x-ratelimit-remaining-requests", b"41"), (b"retry-after", b"3"), (b"x-internal-secret", b"no")]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        stream = b'"stream":true' in await _body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream" if stream else b"application/json"), *self.HEADERS]})
        await send({"type": "http.response.body", "body": self.SSE if stream else self.JSON})


class SlowJson:
    """Thinks for up to 10 s before a JSON answer; records when its client went away."""

    def __init__(self) -> None:
        self.gone = threading.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await _body(receive)
        try:
            message = await asyncio.wait_for(receive(), timeout=10)
        except TimeoutError:
            message = {}
        if message.get("type") == "http.disconnect":
            self.gone.set()
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": Inventive.JSON})


class Lingering:
    """Streams (``before`` seconds between its delta and [DONE]), sends [DONE], and ends the body
    ``after`` seconds later (as a slow generator does); records the client address of each request,
    so a test can tell whether its connection was reused."""

    def __init__(self, before: float = 0, after: float = 0.02) -> None:
        self.before, self.after = before, after
        self.clients: list[tuple[str, int]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await _body(receive)
        self.clients.append(tuple(scope["client"]))
        await _start_sse(send)
        await send({"type": "http.response.body", "more_body": True,
                    "body": b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'})
        await asyncio.sleep(self.before)
        await send({"type": "http.response.body", "more_body": True, "body": b'data: [DONE]\n\n'})
        await asyncio.sleep(self.after)
        await send({"type": "http.response.body", "body": b""})


class UsageHonouring:
    """An OpenAI-style upstream: streams two content chunks and, when the request asks for
    ``stream_options.include_usage``, a usage-only chunk with empty choices. Records request bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.loads(await _body(receive))
        self.bodies.append(body)
        if not body.get("stream"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": Inventive.JSON})
            return
        await _start_sse(send)
        chunk = (b'data: {"id":"u","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                 b'[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n')
        out = b"".join(chunk % word for word in (b"a", b"b"))
        if (body.get("stream_options") or {}).get("include_usage"):
            out += (b'data: {"id":"u","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
                    b'"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}\n\n')
        await send({"type": "http.response.body", "body": out + b"data: [DONE]\n\n"})


class Scripted:
    """Answers each upstream model name with its script: (status, content type, body). The key it
    is sent is in ``KEY`` so that scripts can quote it back. A body given as a tuple is written part
    by part, 50 ms apart (the gateway reads each part on its own)."""

    KEY = "sk-scripted-upstream-key"

    def __init__(self, scripts: dict[str, tuple[int, bytes, bytes | tuple[bytes, ...]]]) -> None:
        self.scripts = scripts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        status, content_type, body = self.scripts[json.loads(await _body(receive))["model"]]
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        *parts, last = body if isinstance(body, tuple) else (body,)
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": last})
