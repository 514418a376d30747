"""The raw ASGI app: routing, auth, control endpoints, request log, one chat handler for all five.

No web framework on purpose: the simulator must never be the benchmark's bottleneck, so a request
costs one body read, one orjson parse, the dialect checks and one write of derived bytes.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import orjson

from . import answers
from .bulk import send_gzipped, send_padded
from .checks import Reject, validate
from .dialects import (
    DIALECTS,
    MAXTOKEN_POLICY_BODY,
    MAXTOKEN_POLICY_STATUS,
    UNSAFE_MARKER,
    Dialect,
    thinking_on,
)
from .knobs import Control, Controls, KnobError, Knobs, parse_knobs, resolve
from .stream import (
    BodyWriter,
    Headers,
    Message,
    Pacer,
    Receive,
    Send,
    install_log_filter,
    send_bytes,
    stream_events,
)

RawHeaders = list[tuple[bytes, bytes]]
RECORD_LIMIT = 1000
_JSON: Headers = [(b"content-type", b"application/json")]
_SSE: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client left first."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _send_json(send: Send, status: int, obj: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send_bytes(send, status, orjson.dumps(obj), [*_JSON, *headers])


def _fault_body(d: Dialect, status: int, knobs: Knobs) -> bytes:
    """The provider's error body for a fault the knobs ask for (status, error_after), error_code applied."""
    return orjson.dumps(d.error(status, None, None, knobs.error_code))


class Simulator:
    """One ASGI app serving all five dialects; see the package docstring for the contract."""

    def __init__(self, defaults: Knobs, keys: dict[str, str] | None) -> None:
        unknown = set(keys or {}) - set(DIALECTS)
        if unknown:
            raise ValueError(f"keys for unknown providers: {sorted(unknown)}")
        self.defaults = defaults
        self.keys = dict(keys or {})
        self.controls = Controls()
        self.records: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
        self._ids = itertools.count(1)
        install_log_filter()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Message, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_sim/"):
            await self._control(path, method, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        provider = path.split("/", 2)[1]
        parsed = self._record(provider, path, scope["headers"], body)
        dialect = DIALECTS.get(provider)
        if dialect is None or path != f"/{provider}/v1/chat/completions":
            await _send_json(send, 404, {"error": {"message": f"unknown path {path}", "type": "not_found"}})
        elif method != "POST":
            await _send_json(
                send, 405, {"error": {"message": f"method {method} not allowed", "type": "invalid_request"}}
            )
        else:
            await self._chat(dialect, scope["headers"], parsed, receive, send)

    def _record(self, provider: str, path: str, raw_headers: RawHeaders, body: bytes) -> Any:
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        raw = body.decode("utf-8", "replace")
        self.records.append({"provider": provider, "path": path, "headers": headers, "body": parsed, "raw": raw})
        return parsed

    # ---- the chat completions endpoint ------------------------------------------------------

    async def _chat(self, d: Dialect, raw_headers: RawHeaders, parsed: Any, receive: Receive, send: Send) -> None:
        extra: Headers = []
        if d.trace_header:  # siliconflow.txt:199, on every response, errors included
            extra.append((b"x-siliconcloud-trace-id", uuid.uuid4().hex.encode()))
        try:
            knobs = resolve(self.defaults, self.controls.take(d.name), raw_headers)
        except KnobError as exc:
            await _send_json(send, 400, {"sim_error": str(exc)}, extra)
            return
        pacer = Pacer(receive)
        try:
            if await pacer.sleep(knobs.ttfb_ms / 1000):
                await self._answer(d, raw_headers, parsed, knobs, extra, pacer, send)
        finally:
            pacer.close()

    async def _answer(
        self, d: Dialect, raw_headers: RawHeaders, parsed: Any, knobs: Knobs, extra: Headers, pacer: Pacer, send: Send
    ) -> None:
        json_headers = [*_JSON, *extra]
        writer = BodyWriter(send, pacer, knobs)

        async def reply(status: int, body: bytes) -> None:
            if knobs.gzip_bomb is not None:
                await send_gzipped(send, status, body, json_headers, knobs.gzip_bomb)
            elif knobs.answer_bytes is not None and status == 200:
                await send_padded(send, status, body, json_headers, knobs.answer_bytes)
            else:
                await send_bytes(send, status, body, json_headers, writer)

        async def fail(status: int, message: str | None = None, field: str | None = None) -> None:
            await reply(status, orjson.dumps(d.error(status, message, field)))

        if not self._authorized(d, raw_headers):
            await fail(401)
            return
        if parsed is None:
            await fail(400, "request body is not valid JSON")
            return
        try:
            validate(d, parsed)
        except Reject as exc:
            await fail(400, exc.message, exc.field)
            return
        if knobs.status is not None:
            if knobs.status == 429 and knobs.retry_after != 0:
                json_headers.append((b"retry-after", str(knobs.retry_after or 1).encode()))
            await reply(knobs.status, _fault_body(d, knobs.status, knobs))
            return
        texts = (answers.text_of(m.get("content")) for m in parsed["messages"])
        if d.content_policy and any(UNSAFE_MARKER in text for text in texts):
            # maxtoken.txt:165 "503 | Content policy violation | ... (actual status code is 400)"
            await reply(MAXTOKEN_POLICY_STATUS, orjson.dumps(MAXTOKEN_POLICY_BODY))
            return
        stream = parsed.get("stream")
        streaming = d.stream_default if stream is None else bool(stream)
        if knobs.error_after is not None and not streaming:
            await reply(200, _fault_body(d, 500, knobs))  # an "error in 200" answer
            return
        answer = answers.build_answer(parsed, thinking=thinking_on(d, parsed), words=knobs.words,
                                      tool_arguments=knobs.tool_arguments)
        model = d.model_alias.get(parsed["model"], parsed["model"])
        meta = {"id_": f"chatcmpl-sim-{next(self._ids)}", "created": int(time.time()), "model": model}
        if not streaming:
            await reply(200, answers.completion_json(d, answer, **meta))
            return
        events = answers.chunk_events(d, answer, **meta)
        if knobs.gzip_bomb is not None:
            await send_gzipped(send, 200, b"".join(events) + answers.DONE_EVENT, [*_SSE, *extra], knobs.gzip_bomb)
            return
        error_body = b"" if knobs.error_after is None else _fault_body(d, 500, knobs)
        await stream_events(send, pacer, events, knobs, [*_SSE, *extra], error_body)

    def _authorized(self, d: Dialect, raw_headers: RawHeaders) -> bool:
        value = next((v for n, v in raw_headers if n.lower() == b"authorization"), b"")
        scheme, _, token = value.decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        expected = self.keys.get(d.name)
        return expected is None or token == expected

    # ---- control endpoints ------------------------------------------------------------------

    async def _control(self, path: str, method: str, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        route = (method, path)
        if route == ("GET", "/_sim/requests"):
            await _send_json(send, 200, list(self.records))
        elif route == ("GET", "/_sim/health"):
            await _send_json(send, 200, {"ok": True})
        elif route == ("POST", "/_sim/reset"):
            self.records.clear()
            self.controls.clear()
            await _send_json(send, 200, {"ok": True})
        elif route == ("POST", "/_sim/control"):
            try:
                control = self._parse_control(body)
            except (KnobError, orjson.JSONDecodeError) as exc:
                await _send_json(send, 400, {"sim_error": str(exc)})
                return
            self.controls.add(control)
            await _send_json(send, 200, {"ok": True})
        elif path in ("/_sim/requests", "/_sim/health", "/_sim/reset", "/_sim/control"):
            await _send_json(send, 405, {"sim_error": f"method {method} not allowed on {path}"})
        else:
            await _send_json(send, 404, {"sim_error": f"unknown path {path}"})

    @staticmethod
    def _parse_control(body: bytes) -> Control:
        data = orjson.loads(body or b"{}")
        if not isinstance(data, dict):
            raise KnobError("control body must be a JSON object")
        provider = data.pop("provider", None)
        if provider is not None and provider not in DIALECTS:
            raise KnobError(f"unknown provider {provider!r}; known: {sorted(DIALECTS)}")
        count = data.pop("count", None)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise KnobError("count must be an integer >= 1")
        return Control(provider, parse_knobs(data), count)


def create_app(
    *,
    ttfb_ms: float = 0,
    chunk_delay_ms: float = 0,
    words: int | None = None,
    split_writes: bool = False,
    keys: dict[str, str] | None = None,
) -> Simulator:
    """A fresh simulator (own request log and controls); the kwargs are its knob defaults."""
    values = {"ttfb_ms": ttfb_ms, "chunk_delay_ms": chunk_delay_ms, "words": words, "split_writes": split_writes}
    return Simulator(Knobs(**parse_knobs(values)), keys)


def serve(host: str = "127.0.0.1", port: int = 8900, **app_kwargs: Any) -> None:
    """Serve a simulator until interrupted (what ``gateway simulate`` runs)."""
    import uvicorn

    uvicorn.run(create_app(**app_kwargs), host=host, port=port, log_level="warning")


__all__ = ["Simulator", "create_app", "serve"]
