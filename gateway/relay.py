"""Upstream answers back to the client: JSON whole, SSE event by event.

Bytes go out as they came; events are parsed only so far as a feature needs (usage, the first
reasoning/content delta, errors, a malformed event). An upstream that fails mid-stream ends the
client's stream with an ``data: {"error": ...}`` event, never a hang (issue 4, point 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from .attempts import Clock
from .config import Provider
from .doors import Events
from .errors import GatewayError, UpstreamTooLarge, UpstreamUnavailable
from .exchange import Exchange
from .sse import DONE, EventSplitter, EventTooLarge, data_of, frame
from .upstream import mapped, stream_error

Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no")]
_DONE = b"data: [DONE]"
_DRAIN_SECONDS = 1.0


async def relay_json(response: aiohttp.ClientResponse, send: Send, headers: Headers, provider: Provider,
                     exchange: Exchange, clock: Clock, max_bytes: int,
                     translate: Callable[[dict[str, Any], bytes], bytes] | None = None) -> None:
    """Relay a JSON answer: the upstream's bytes, or a front door's ``translate``-ion of them."""
    try:
        body = await _read_body(response, clock, provider, max_bytes)
    except Exception as exc:
        raise mapped(provider, exc) from None
    exchange.upstream_done = time.perf_counter()
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(f"{provider.name} answered with a body that is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise stream_error(provider, answer)  # a 200 that is only an error envelope: a failed attempt
    if isinstance(answer.get("usage"), dict):
        exchange.usage = answer["usage"]
    if translate is not None:
        body = translate(answer, body)
    exchange.status = 200
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
    exchange.ended = time.perf_counter()  # before any await: from here the client is not a 499


async def _read_body(response: aiohttp.ClientResponse, clock: Clock, provider: Provider, limit: int) -> bytes:
    """The whole body, each wait for more bounded by the idle timeout, and cut (the attempt failed)
    as soon as it is past ``limit`` bytes: never read whole into memory first."""
    length = response.content_length
    if length is not None and length > limit:
        raise _too_large(provider, limit, length)
    chunks: list[bytes] = []
    size = 0
    content = response.content
    while True:
        clock.waiting()
        chunk = await content.readany()
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(provider, limit)
            chunks.append(chunk)
        if not chunk or content.at_eof():  # at_eof: the whole body is in, no read for its end
            clock.sending()
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(provider: Provider, limit: int, length: int | None = None) -> UpstreamTooLarge:
    size = "more than" if length is None else f"{length} bytes, more than"
    return UpstreamTooLarge(f"{provider.name}'s answer is {size} the {limit} bytes allowed "
                            "(GATEWAY_MAX_UPSTREAM_BYTES)")


class _StreamState:
    """What the relay learns from the events it passes on. Every field of an upstream chunk is
    checked for its type before use: an upstream's odd chunk is relayed, never a crash."""

    __slots__ = ("exchange", "include_usage", "strip_usage", "usage", "usage_sent", "template", "finished",
                 "answered", "deltas", "encoder")

    def __init__(self, exchange: Exchange, include_usage: bool, strip_usage: bool,
                 encoder: Events | None = None) -> None:
        self.encoder = encoder  # a front door's events for each chunk; None: the chunks go out as they came
        self.exchange = exchange
        self.include_usage = include_usage
        self.strip_usage = strip_usage  # the gateway asked for usage itself: the client never sees it
        self.usage: dict[str, Any] | None = None
        self.usage_sent = False  # the upstream sent OpenAI's own usage-only chunk
        self.template: dict[str, Any] = {}
        self.finished = False  # a choice has had its finish_reason: the answer is complete
        self.answered = False  # a data event that is not an error has arrived
        self.deltas = 0  # deltas in the read being relayed

    def observe(self, chunk: dict[str, Any], event: bytes) -> bytes | None:
        """Note what ``chunk`` carries; returns the event bytes the client gets (None: nothing)."""
        choices = chunk.get("choices")
        exchange = self.exchange
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            first = choices[0]
            if first.get("finish_reason"):
                self.finished = True
            delta = first.get("delta")
            if isinstance(delta, dict) and delta:
                # every non-empty delta counts for the inter-token gaps: looking inside each one for
                # which kind it is cost 4% of a stream's CPU in bench/, and only the first needs it
                self.deltas += 1
                if exchange.first_reasoning is None and delta.get("reasoning_content"):
                    exchange.first_reasoning = exchange.since_start()
                if exchange.first_content is None and (delta.get("content") or delta.get("tool_calls")):
                    exchange.first_content = exchange.since_start()
        usage = chunk.get("usage")
        if not isinstance(usage, dict) or not usage:
            return event
        self.usage = exchange.usage = usage
        if not choices:
            self.usage_sent = True
            return None if self.strip_usage else event
        if not self.include_usage:
            return event  # the upstream's own shape, unchanged
        # OpenAI's shape: usage only on a final chunk with empty choices (sent before [DONE]).
        self.template = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        return b"data: " + orjson.dumps({k: v for k, v in chunk.items() if k != "usage"})

    def usage_chunk(self) -> bytes | None:
        """The event (without its terminator) carrying usage in OpenAI's shape, if one is owed."""
        if not self.include_usage or self.usage_sent or self.usage is None:
            return None
        return b"data: " + orjson.dumps({**self.template, "choices": [], "usage": self.usage})

    def relay(self, events: list[bytes], provider: Provider) -> tuple[list[bytes], bool, GatewayError | None]:
        """The events the client gets for these upstream events (without terminators), whether
        the stream is done, and the error that ended it (the events before it still go out)."""
        try:
            return self._relay(events, provider)
        finally:
            if self.deltas:
                self.exchange.deltas_arrived(self.deltas)
                self.deltas = 0

    def _relay(self, events: list[bytes], provider: Provider) -> tuple[list[bytes], bool, GatewayError | None]:
        out: list[bytes] = []
        encoder = self.encoder
        for event in events:
            data = data_of(event)
            if data is None:  # a comment such as ": keep-alive", or a field-only event
                if encoder is None:  # a door has keep-alives of its own
                    out.append(event)
            elif data == DONE:
                if not self.answered:
                    return out, True, UpstreamUnavailable(f"{provider.name} ended its stream without an answer")
                return self.done(out), True, None
            else:  # (the parse and its checks inline: a call fewer per event of every stream)
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    return out, True, UpstreamUnavailable(f"{provider.name} sent an event that is not JSON")
                if type(chunk) is not dict or "error" in chunk:
                    return out, True, _not_a_chunk(provider, chunk)
                relayed = self.observe(chunk, event)
                self.answered = True
                if encoder is not None:
                    out += encoder.chunk(chunk)
                elif relayed is not None:
                    out.append(relayed)
        return out, False, None

    def done(self, out: list[bytes]) -> list[bytes]:
        if self.encoder is not None:
            out += self.encoder.end()
            return out
        usage = self.usage_chunk()
        out.extend((usage, _DONE) if usage else (_DONE,))
        return out


async def relay_sse(response: aiohttp.ClientResponse, send: Send, headers: Headers, provider: Provider,
                    exchange: Exchange, clock: Clock, *, include_usage: bool, strip_usage: bool,
                    max_event_bytes: int, encoder: Events | None = None, ping_after: float | None = None,
                    ping: bytes = b"") -> None:
    """Relay a stream. Nothing reaches the client, not even the status, until the first data event
    is in hand and is not an error (issue 10): a failure before it raises, so the next try or route
    can answer; a failure after it ends the client's stream with an error event."""
    state = _StreamState(exchange, include_usage, strip_usage, encoder)
    splitter = EventSplitter(max_event_bytes)
    held: list[bytes] = []  # comments before the first data event
    content = response.content
    while True:
        clock.waiting()
        try:
            if ping_after is None or not exchange.responded:
                chunk = await content.readany()
            else:
                chunk = await _read_or_ping(content, send, ping_after, ping)
        except Exception as exc:
            failure = mapped(provider, exc)
            if not exchange.responded:
                raise failure from None
            return await end_with_error(send, exchange, failure, encoder=encoder)
        if not chunk:
            break
        clock.sending()
        try:
            events, done, error = state.relay(splitter.feed(chunk), provider)
        except EventTooLarge as exc:  # the events ahead of it in this read still go out (issue 11, point 8)
            events, _, error = state.relay(exc.before, provider)
            done, error = True, error or UpstreamUnavailable(f"{provider.name}: {exc}")
        if not exchange.responded:
            if error is not None:
                raise error
            if not state.answered:
                held += events
                continue
            clock.first = True
            await _start(send, headers, exchange)
            events = held + events
        if done:
            exchange.upstream_done = time.perf_counter()
        if error is not None:
            return await end_with_error(send, exchange, error, events, encoder)
        if events:
            await send({"type": "http.response.body", "body": _framed(events), "more_body": not done})
        if done:
            exchange.ended = time.perf_counter()  # before any await: the watcher reads it
            await _drain(response)
            return
    exchange.upstream_done = time.perf_counter()
    # The upstream closed its body without a blank line after its last event, or without
    # [DONE]: a complete answer (a finish_reason was seen) still ends as OpenAI's does.
    events, done, error = state.relay([splitter.pending.strip()] if splitter.pending.strip() else [], provider)
    if error is None and not done and not state.finished:
        error = UpstreamUnavailable(f"{provider.name} ended the stream before its answer was complete")
    if not exchange.responded:
        if error is not None:
            raise error
        await _start(send, headers, exchange)
        events = held + events
    if error is not None:
        return await end_with_error(send, exchange, error, events, encoder)
    events = events if done else state.done(events)
    await send({"type": "http.response.body", "body": _framed(events), "more_body": False})
    exchange.ended = time.perf_counter()


async def _read_or_ping(content: aiohttp.StreamReader, send: Send, after: float, ping: bytes) -> bytes:
    """The next read; a keep-alive event to the client each ``after`` seconds of upstream silence
    (a door's clients expect one; a read cancelled by the timeout loses nothing: the data stays
    buffered)."""
    while True:
        try:
            async with asyncio.timeout(after):
                return await content.readany()
        except TimeoutError:
            await send({"type": "http.response.body", "body": ping + b"\n\n", "more_body": True})


def _framed(events: list[bytes]) -> bytes:
    """Events (without terminators) as one write to the client."""
    return b"\n\n".join(events) + b"\n\n"


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows [DONE] (usually only the end of the chunked body) after the client has its
    answer, so the upstream connection goes back to the pool: closed, the next stream would pay
    a new connection, TLS handshake included, to a remote upstream."""
    if not response.content.at_eof():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(response.content.read(), _DRAIN_SECONDS)


def _not_a_chunk(provider: Provider, data: Any) -> GatewayError:
    """The failure an event's parsed data is when it is no chat chunk: an error envelope, or not
    a JSON object at all."""
    if not isinstance(data, dict):
        return UpstreamUnavailable(f"{provider.name} sent an event that is not a JSON object")
    return stream_error(provider, data)


async def _start(send: Send, headers: Headers, exchange: Exchange) -> None:
    exchange.status = 200
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})


async def end_with_error(send: Send, exchange: Exchange, error: GatewayError,
                         events: list[bytes] | None = None, encoder: Events | None = None) -> None:
    """End a started stream: the events still owed, then ``data: {"error": ...}`` (or the front
    door's error event), in one write."""
    exchange.error_code = error.code
    last = frame(error.body()) if encoder is None else encoder.error(error) + b"\n\n"
    body = (_framed(events) if events else b"") + last
    await send({"type": "http.response.body", "body": body, "more_body": False})
    exchange.ended = time.perf_counter()
