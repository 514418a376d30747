"""One request: read -> route -> validate -> rewrite -> send -> relay.

A plain ASGI endpoint (no framework request object on the hot path), one per front door: the door
turns its request into a chat body and the chat answer into its own (:mod:`gateway.doors`); the
steps between are the same for every door. A route whose documented
limits the request breaks is skipped; nothing is sent upstream for a request no route can take.
The others are tried in the order :mod:`gateway.attempts` gives (config order or weights, ejected
providers last): a failure before anything reached the client is retried on the same route when a
second try can cure it, else the next route is tried (issue 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import request as request_body
from .admission import Admitting, KeyLimits
from .attempts import Clock, RetryBudget, most_meaningful, order, pause
from .config import Route
from .connections import ANSWERED
from .doors import CHAT, Door, Events, Request
from .errors import (
    CLIENT_CLOSED,
    CLIENT_CLOSED_STATUS,
    SHUTDOWN,
    ClientError,
    GatewayError,
    InternalError,
    KeyRefusal,
    ModelNotAllowed,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    led_by,
    quoted,
)
from .exchange import Attempt, Exchange
from .health import Health
from .intake import ClientLeft, DisconnectWatcher, Receive, id_and_length, new_id, read_body
from .keys import Key, key_of
from .prices import tokens
from .relay import Headers, end_with_error, relay_json, relay_sse
from .responses import send_error
from .rewrite import rewrite
from .routing import Router
from .state import Ticket
from .thinking import NO_INTENT, read_intent
from .upstream import Upstream, passed_back, upstream_named

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Observer(Protocol):
    """Who hears about each request: the metrics and the access log."""

    def started(self) -> None: ...

    def finished(self, exchange: Exchange) -> None: ...

    def failed(self, exchange: Exchange, error: Exception) -> None: ...


class Call:
    """One request on its way through the steps: what each of them needs, passed as one."""

    __slots__ = ("send", "exchange", "door", "id_headers", "request", "intent", "encoder", "key", "admitting",
                 "ticket")

    def __init__(self, send: Send, exchange: Exchange, door: Door, key: Key) -> None:
        self.send, self.exchange, self.door, self.key = send, exchange, door, key
        self.id_headers = door.id_headers(exchange.request_id)
        self.admitting: Admitting | None = None  # the key's admission, asked and not yet awaited
        self.ticket: Ticket | None = None  # the key's admission, when it has limits or a budget
        self.request: Request | None = None  # the client's request in chat terms, once read
        self.intent = NO_INTENT
        self.encoder: Events | None = None  # the door's event stream for the attempt that answers

    async def error(self, error: GatewayError) -> None:
        """An error answer, in the door's shape."""
        await send_error(self.send, error, self.id_headers, self.door.error_body(error, self.exchange.request_id))

    async def end_stream(self, error: GatewayError) -> None:
        """A started stream's last event: the error, in the door's shape."""
        await end_with_error(self.send, self.exchange, error, encoder=self.encoder)


class Handler:
    """The pipeline behind one front door (``door``); the doors share the retry budget."""

    def __init__(self, router: Callable[[], Router], upstream: Upstream, health: Health, *, max_body_bytes: int,
                 max_event_bytes: int, observer: Observer, keep_bodies: bool = False,
                 request_deadline: float = 900.0, max_upstream_bytes: int = 32 * 1024 * 1024, door: Door = CHAT,
                 budget: RetryBudget | None = None, limits: KeyLimits | None = None) -> None:
        self._router = router  # read once per request: a reload never changes a request in flight
        self._upstream = upstream
        self._health = health
        self._door = door
        self._budget = budget or RetryBudget()
        self._deadline = request_deadline
        self._max_body = max_body_bytes
        self._max_event = max_event_bytes
        self._max_upstream = max_upstream_bytes  # a JSON answer past it is cut while read (issue 11)
        self._observer = observer
        self._keep_bodies = keep_bodies
        self._limits = limits or KeyLimits(None)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        request_id, length = id_and_length(scope)
        key = key_of(scope)
        exchange = Exchange(request_id=request_id or new_id(), frontdoor=self._door.name, key=key.name)
        call = Call(send, exchange, self._door, key)
        watcher = DisconnectWatcher(receive, exchange)
        self._observer.started()
        self._budget.requests += 1
        try:
            raw = await read_body(receive, length, self._max_body)
            exchange.received = time.perf_counter()
            watcher.arm()
            await self._handle(raw, call)
        except GatewayError as exc:
            exchange.status, exchange.error_code = exc.status, exc.code
            if isinstance(exc, KeyRefusal):
                exchange.refused = exc.reason
            if call.key.paced and isinstance(exc, UpstreamError):
                exc.headers = upstream_named(exc.headers)
            await call.error(exc)
        except ClientLeft:  # or the server answered a body that stopped arriving itself (connections.py)
            exchange.status, exchange.error_code = scope.get(ANSWERED) or (CLIENT_CLOSED_STATUS, CLIENT_CLOSED)
        except asyncio.CancelledError:
            # Either the client went away (the upstream request was cancelled with it), or the server
            # is shutting down past its grace: the client is told, and the access log line is the
            # one line about it (issue 11, point 9: not a traceback per request from the server).
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if watcher.disconnected:
                exchange.status, exchange.error_code = CLIENT_CLOSED_STATUS, CLIENT_CLOSED
            elif exchange.ended is None:  # else the client has every byte: a success, only its drain cut
                exchange.error_code = SHUTDOWN
                with contextlib.suppress(Exception):
                    if not exchange.responded:
                        exchange.status = _SHUTTING_DOWN.status
                        await call.error(_SHUTTING_DOWN)
                    elif exchange.stream:
                        await call.end_stream(_SHUTTING_DOWN)
        except Exception as exc:  # a bug of ours: one line, no stack trace, no request content
            self._observer.failed(exchange, exc)
            exchange.error_code = "internal_error"
            if not exchange.responded:
                exchange.status = 500
                await call.error(InternalError(f"internal error ({type(exc).__name__}); request id "
                                               f"{exchange.request_id}"))
        finally:
            self._budget.requests -= 1
            watcher.stop()
            for attempt in exchange.attempts:
                attempt.outcome = attempt.outcome or exchange.code  # cut off by the client, a shutdown, a bug
            if call.admitting is not None:  # asked, and the request went no further
                self._limits.release(call.admitting)
            try:
                self._settle(call)
            except Exception as exc:  # a bug in counting must not hide the request's own line
                self._observer.failed(exchange, exc)
            try:
                self._observer.finished(exchange)
            except Exception as exc:  # the answer is out; a bug in recording it must not reach the client
                self._observer.failed(exchange, exc)

    def _settle(self, call: Call) -> None:
        """What the answer cost, counted against the key's limits and budget. An answer that
        started without usage (the client left before the usage chunk, the upstream broke off or
        sends none) counts as its estimate: a client must not make its tokens free by leaving early."""
        exchange, ticket = call.exchange, call.ticket
        usage = exchange.usage
        if not usage and ticket is not None and _answered(exchange):
            usage = {"completion_tokens": ticket.estimate, "total_tokens": ticket.estimate}
        if usage and exchange.provider is not None and exchange.upstream_model is not None:
            price = self._router().config.prices.get((exchange.provider, exchange.upstream_model))
            exchange.cost_usd, exchange.unpriced = (0.0, True) if price is None else (price.cost(usage), False)
        if ticket is not None:
            self._limits.settle_soon(ticket, tokens(usage), exchange.cost_usd)

    async def _handle(self, raw: bytes, call: Call) -> None:
        exchange = call.exchange
        request = call.request = await self._door.parse(raw, call.key.owner)
        body = request.chat
        router = self._router()
        exchange.alias, exchange.stream = router.alias(request.model), request_body.wants_stream(body)
        try:
            request_body.check(body)
            routes = router.candidates(exchange.alias)
            if not call.key.allows(exchange.alias, request.model):
                raise ModelNotAllowed(f"key {call.key.name!r} may not use model {quoted(request.model)}",
                                      param="model")
            if call.key.limited:  # asked now, so that Redis answers while the request is checked and rewritten
                call.admitting = self._limits.admit(call.key, new_id(), self._limits.estimate(body))
            call.intent = read_intent(body)
            eligible = router.eligible(routes, body, call.intent, exchange.rejections,
                                       request.client_param if request.translated else None)
        except ClientError as exc:
            raise _as_sent(exc, request) from None
        loop = asyncio.get_running_loop()
        request_end = loop.time() + self._deadline
        failures: list[UpstreamError] = []
        for route in order(eligible, self._health):
            provider_end = min(request_end, loop.time() + route.provider.timeout.total)
            tries = 0
            while loop.time() < provider_end:
                tries += 1
                try:
                    await self._try(route, call, tries, provider_end, request_end)
                    return
                except UpstreamError as exc:
                    if exchange.responded or not exc.retryable:
                        raise
                    failures.append(exc)
                    wait = pause(exc, route.provider.retry, tries)
                    if wait is None or loop.time() + wait >= provider_end or not self._budget.allows():
                        break  # on to the next route: a fallback, not a retry
                    await asyncio.sleep(wait)
                    if not self._budget.allows():  # again: others took the room during the backoff
                        break
            if loop.time() >= request_end:
                break
        error = most_meaningful(failures) if failures else UpstreamTimeout(
            f"the request's deadline ({self._deadline:g} s) passed before an upstream could be tried")
        exchange.provider = error.headers.get("x-gateway-provider", exchange.provider)
        raise error

    async def _try(self, route: Route, call: Call, tries: int, provider_end: float, request_end: float) -> None:
        """One attempt, recorded; a retry holds a place in the retry budget while it runs. The
        key's admission is awaited here, after the first rewrite and before anything is sent."""
        exchange, request = call.exchange, call.request
        assert request is not None
        upstream_body, dropped = rewrite(request.chat, call.intent, route.provider.profile, route.model,
                                         exchange.stream)
        if call.admitting is not None:
            admitting, call.admitting = call.admitting, None
            call.ticket, limit_headers = await admitting  # a lease of our own: a client's x-request-id may repeat
            call.id_headers = [*call.id_headers, *limit_headers]
        attempt = Attempt(route.provider.name, retry=tries > 1)
        exchange.attempts.append(attempt)
        budget = self._budget
        if tries > 1:
            budget.retries += 1
        try:
            await self._attempt(route, call, attempt, upstream_body, dropped, provider_end, request_end)
        except UpstreamError as exc:
            attempt.outcome = exc.code or "upstream_error"
            exc.headers.setdefault("x-gateway-provider", route.provider.name)
            exc.headers["x-gateway-attempts"] = str(len(exchange.attempts))
            if exchange.dropped:
                exc.headers.setdefault("x-gateway-dropped", ",".join(exchange.dropped))
            raise
        else:
            attempt.outcome = exchange.error_code or "ok"
        finally:
            if tries > 1:
                budget.retries -= 1
            if attempt.outcome:
                self._health.record(attempt.provider, attempt.outcome)

    async def _attempt(self, route: Route, call: Call, attempt: Attempt, upstream_body: bytes,
                       dropped: list[str], provider_end: float, request_end: float) -> None:
        """One route, rewritten: send -> relay, under the attempt's deadlines. An UpstreamError
        before the response starts lets the caller try again or try the next route."""
        exchange, request, door = call.exchange, call.request, self._door
        assert request is not None
        provider, profile, stream = route.provider, route.provider.profile, exchange.stream
        exchange.provider, exchange.upstream_model = provider.name, route.model
        exchange.dropped = [*request.dropped, *dropped] if request.dropped else dropped
        if self._keep_bodies:
            exchange.body = upstream_body
        attempt.started = time.perf_counter()
        clock = Clock(provider.timeout, provider_end, request_end)
        try:
            async with self._upstream.post(provider, upstream_body, stream=stream, request_id=exchange.request_id,
                                           attempt=attempt, clock=clock) as response:
                headers: Headers = [*call.id_headers, (b"x-gateway-provider", provider.name.encode()),
                                    (b"x-gateway-attempts", str(len(exchange.attempts)).encode())]
                if exchange.dropped:
                    headers.append((b"x-gateway-dropped", ",".join(exchange.dropped).encode()))
                headers += passed_back(provider, response.raw_headers, renamed=call.key.paced)
                if stream:
                    wants_usage = request_body.wants_usage(request.chat)
                    call.encoder = door.events(request, exchange.request_id)
                    await relay_sse(response, call.send, headers, provider, exchange, clock,
                                    include_usage=wants_usage, strip_usage=profile.stream_options and not wants_usage,
                                    max_event_bytes=self._max_event, encoder=call.encoder,
                                    ping_after=door.ping_after, ping=door.ping)
                else:
                    await relay_json(response, call.send, headers, provider, exchange, clock, self._max_upstream,
                                     None if door is CHAT else _translator(door, request, exchange.request_id))
        except asyncio.CancelledError:
            if clock.fired is None:
                raise  # the client left, or the server is shutting down
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            error = clock.fired
            error.message = f"{provider.name} {error.message}"
            if not exchange.responded:
                raise error from None
            exchange.error_code = error.code  # mid-stream: the client's stream ends with the error
            if stream and exchange.ended is None:
                with contextlib.suppress(Exception):
                    await call.end_stream(error)
        finally:
            clock.stop()


def _answered(exchange: Exchange) -> bool:
    """The answer started: a 200, or the answering attempt's headers came before the client left
    or the server shut down."""
    last = exchange.attempts[-1] if exchange.attempts else None
    return exchange.status == 200 or (last is not None and last.headers is not None
                                      and last.outcome in (CLIENT_CLOSED, SHUTDOWN))


def _translator(door: Door, request: Request, request_id: str) -> Callable[[dict[str, Any], bytes], bytes]:
    return lambda answer, body: door.answer(answer, body, request, request_id)


def _as_sent(error: ClientError, request: Request) -> ClientError:
    """A client error about the chat body, naming the field as the client sent it."""
    if not request.translated:
        return error
    param = request.client_param(error.param)
    if param is not None and error.param is not None:
        error.message = led_by(param, error.param, error.message)
        error.param = param
    return error


_SHUTTING_DOWN = UpstreamUnavailable("the gateway is shutting down; this request was cut off", code=SHUTDOWN)
_SHUTTING_DOWN.status = 503  # the gateway's own state, not an upstream's failure: try again

