"""Client connections: uvicorn's httptools protocol with the limits a gateway open to clients needs
(issue 11). ``gateway serve`` and ``gateway demo`` run the app on :class:`GuardedProtocol`.

Timeouts cost no timer per request: the protocol notes when each phase of a connection began (in
the parser's callbacks, with the one clock read of each network read) and ONE sweeper per server
walks the open connections every half second (:class:`_Guard`). It closes a connection that never
sent a byte within ``idle_timeout``, answers 408 to headers unfinished after ``header_timeout`` and
to a body with no byte for ``body_timeout`` or unfinished after ``body_deadline``, closes idle
keep-alive connections after ``keepalive_timeout`` (uvicorn's own timer, one per response, is not
armed) and aborts a connection the gateway could not write to for ``write_timeout`` (the client
stopped reading: the handler's disconnect watcher then cancels the upstream request).

Header bytes are counted while they arrive: httptools joins the fragments of an unfinished header
by concatenation, so an unbounded one costs memory and CPU with the square of its size. Over
``max_header_bytes`` or ``max_headers``: 431. A ``Transfer-Encoding`` other than exactly
``chunked``: 400 (a proxy in front might read the body otherwise).

``max_connections`` caps the open connections of the process below its file-descriptor limit (a
refused ``accept`` is a reset for the client): at the cap a new connection makes room by closing
the one idle for longest among those with no request in the app (nginx does the same); with none
idle it is answered 503 with Retry-After once its headers are in, and past a margin closed at once.

A server shutdown (SIGTERM; a reload under ``--workers`` replaces each worker that way) closes no
idle connection at once, which would reset a client sending on it at that moment: the next
request on each connection is answered with ``Connection: close`` and idle ones close when their
keep-alive time is up.

The app tells the protocol its limits and hears of each refusal through the lifespan state
(``LIMITS``, ``REFUSED``); a request the protocol answered itself carries ``ANSWERED`` in its scope.
"""

from __future__ import annotations

import asyncio
import resource
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from .errors import GatewayError, HeadersTooLarge, InvalidRequest, RequestTimeout, TooManyConnections
from .settings import Settings

#: every ``reason`` a connection is refused or cut for: the values of the metric's label
REASONS = ("idle_timeout", "header_timeout", "body_timeout", "header_too_large", "too_many_headers",
           "connection_cap", "write_timeout", "bad_transfer_encoding")
LIMITS = "gateway.client_limits"  # lifespan state: the Limits in force
REFUSED = "gateway.client_refused"  # lifespan state: called (reason, client address) on each refusal
ANSWERED = "gateway.answered"  # scope: (status, code) of the answer the protocol sent itself

#: upstream connections a process may hold (gateway/upstream.py's one pool): room the default cap leaves
UPSTREAM_CONNECTIONS = 1000
SPARE_FDS = 64  # log, metrics files, sockets being closed, the cap's margin
CAP_MARGIN = 32  # connections over the cap that still wait for their 503; past it: closed at once
RETRY_AFTER = b"1"

Refused = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Limits:
    idle_timeout: float = 10.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_deadline: float = 120.0
    write_timeout: float = 60.0
    keepalive_timeout: float = 5.0
    max_connections: int = 0  # 0: default_max_connections()
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    upstream_connections: int = UPSTREAM_CONNECTIONS  # the config's pools, left room for by the auto cap

    @classmethod
    def from_settings(cls, settings: Settings, upstream_connections: int = UPSTREAM_CONNECTIONS) -> Limits:
        return cls(idle_timeout=settings.client_idle_timeout, header_timeout=settings.client_header_timeout,
                   body_timeout=settings.client_body_timeout, body_deadline=settings.client_body_deadline,
                   write_timeout=settings.client_write_timeout, keepalive_timeout=settings.keepalive_timeout,
                   max_connections=settings.max_connections, max_header_bytes=settings.max_header_bytes,
                   max_headers=settings.max_headers, upstream_connections=upstream_connections)


def default_max_connections(upstream: int = UPSTREAM_CONNECTIONS) -> int:
    """The descriptor limit less the upstream pool (at most half of the limit) and a spare few."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(soft - min(upstream, soft // 2) - SPARE_FDS, 1)


class _Stop(Exception):
    """Raised in a parser callback: the parser stops, ``data_received`` answers the refusal."""


class _Guard:
    """One per server (its event loop): the limits, the answers, the idle connections oldest
    first, and the sweeper that runs while there are connections."""

    def __init__(self, protocol: GuardedProtocol) -> None:
        state = protocol.app_state
        limits: Limits = state.get(LIMITS) or Limits()
        self.limits = limits
        self.refused: Refused = state.get(REFUSED) or (lambda reason, client: None)
        self.cap = limits.max_connections or default_max_connections(limits.upstream_connections)
        self.connections = protocol.connections
        self.loop = protocol.loop
        self.idle: OrderedDict[GuardedProtocol, None] = OrderedDict()  # no request in the app; oldest first
        shortest = min(limits.idle_timeout, limits.header_timeout, limits.body_timeout, limits.write_timeout,
                       limits.keepalive_timeout)
        self.every = max(0.05, min(0.5, shortest / 4))
        self._timer: asyncio.TimerHandle | None = None
        size = limits.max_header_bytes
        self.errors: dict[str, GatewayError] = {
            "header_timeout": RequestTimeout(f"the request headers did not arrive within {limits.header_timeout:g} s"),
            "body_timeout": RequestTimeout(f"the request body stopped arriving (no byte for {limits.body_timeout:g} s, "
                                           f"or not whole within {limits.body_deadline:g} s)"),
            "header_too_large": HeadersTooLarge(f"the request line and headers are larger than {size} bytes"),
            "too_many_headers": HeadersTooLarge(f"the request has more than {limits.max_headers} headers"),
            "bad_transfer_encoding": InvalidRequest("Transfer-Encoding other than exactly 'chunked' is not accepted"),
            "connection_cap": TooManyConnections("the gateway has too many open connections; retry shortly",
                                                 headers={"retry-after": RETRY_AFTER.decode()}),
        }

    def watch(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.every, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        try:
            now = time.monotonic()
            for connection in list(self.connections):
                if isinstance(connection, GuardedProtocol) and not connection.closed:
                    connection.check(now)
        finally:
            if self.connections:
                self.watch()

    def make_room(self) -> bool:
        """Close the connection idle for longest; False when none is idle."""
        while self.idle:
            victim, _ = self.idle.popitem(last=False)
            if not victim.closed:
                victim.close("connection_cap")
                return True
        return False

    def response(self, error: GatewayError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        body = error.body()
        parts = [STATUS_LINE[error.status]]
        for name, value in (*default_headers, *((k.encode(), v.encode()) for k, v in error.headers.items())):
            parts += [name, b": ", value, b"\r\n"]
        parts += [b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                  b"\r\nconnection: close\r\n\r\n", body]
        return b"".join(parts)


_GUARDS: weakref.WeakKeyDictionary[ServerState, _Guard] = weakref.WeakKeyDictionary()


class GuardedProtocol(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        guard = _GUARDS.get(server_state)
        if guard is None:
            guard = _GUARDS[server_state] = _Guard(self)
        self._guard = guard
        self._limits = limits = guard.limits
        self._max_header_bytes, self._max_headers = limits.max_header_bytes, limits.max_headers
        self._now = self._since = time.monotonic()  # _now: the clock at the latest network read
        self._requests = 0  # requests begun on this connection
        self._in_headers = False  # a request's first byte is in, its headers are not
        self._in_body = False  # its headers are in, the end of its body is not
        self._request_at = self._headers_at = 0.0
        self._partial = 0  # bytes read while a request's headers were unfinished
        self._paused_at: float | None = None  # when writing to the client was paused
        self._over_cap = False
        self._draining = False
        self._refusal: str | None = None
        self.closed = False

    # -- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self._guard
        guard.watch()
        if len(self.connections) > guard.cap and not guard.make_room():
            if len(self.connections) > guard.cap + CAP_MARGIN:
                self.close("connection_cap")
                return
            self._over_cap = True  # answered 503 once its headers are in, if still over
            return
        guard.idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._guard.idle.pop(self, None)
        super().connection_lost(exc)

    def close(self, reason: str | None, *, abort: bool = False) -> None:
        """Close at once (``abort``: dropping what is unsent), telling the app's request it is over."""
        if self.closed:
            return
        self.closed = True
        self._guard.idle.pop(self, None)
        self.connections.discard(self)  # the count the cap looks at: this one is gone
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if abort:
            self.transport.abort()
        else:
            self.transport.close()
        if reason is not None:
            self._guard.refused(reason, f"{self.client[0]}:{self.client[1]}" if self.client else "unknown")

    def _answer(self, reason: str, *, writable: bool = True) -> None:
        if writable and not self.transport.is_closing():
            self.transport.write(self._guard.response(self._guard.errors[reason], self.server_state.default_headers))
        self.close(reason)

    def shutdown(self) -> None:
        """Server shutdown: answer the next request with ``Connection: close`` rather than close idle
        connections now; the sweeper closes idle ones after their keep-alive time."""
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False

    def pause_writing(self) -> None:
        self._paused_at = time.monotonic()
        super().pause_writing()

    def resume_writing(self) -> None:
        self._paused_at = None
        super().resume_writing()

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._now = time.monotonic()
        unfinished = self._in_headers
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._answer(self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Headers unfinished before and after this read: all of it was header bytes. (The read a
        # request begins in is not counted: it may end the previous one's body.)
        if unfinished and self._in_headers:
            self._partial += len(data)
            if self._partial > self._max_header_bytes:
                self._answer("header_too_large")

    def _stop(self, reason: str) -> None:
        self._refusal = reason
        raise _Stop(reason)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._request_at = self._now
        self._partial = 0
        self._requests += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's own, with the limits: a copy rather than a call (one per header). Each header is
        # held as a tuple of its own, several times its bytes: past the count, none more is kept. (The
        # bytes are summed once the headers are in: until then each read is bounded, and the reads
        # of unfinished headers are counted by data_received.)
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"transfer-encoding" and value.strip().lower() != b"chunked":
            self._stop("bad_transfer_encoding")  # (httptools itself refuses a second one)
        headers = self.headers
        headers.append((name, value))
        if len(headers) > self._max_headers:
            self._stop("too_many_headers")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._in_body = True
        self._headers_at = self._now
        # the request line (uvicorn's on_url) and each header line: name, ": ", value, CRLF
        size = len(self.url) + sum(map(len, chain.from_iterable(self.headers))) + 4 * len(self.headers)
        if size > self._max_header_bytes:
            self._stop("header_too_large")
        guard = self._guard
        guard.idle.pop(self, None)
        if self._over_cap:
            if len(self.connections) > guard.cap:
                self._stop("connection_cap")
            self._over_cap = False
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # uvicorn's own, less the keep-alive timer (the sweeper keeps that time)
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not self.closed:
            self._since = time.monotonic()
            self._guard.idle[self] = None

    # -- the sweeper's look ------------------------------------------------------------------

    def check(self, now: float) -> None:
        limits = self._limits
        cycle = self.cycle
        if self._paused_at is not None and now - self._paused_at > limits.write_timeout:
            self.close("write_timeout", abort=True)  # close() would wait for the unsent bytes
        elif self._in_headers:
            if now - self._request_at > limits.header_timeout:
                self._answer("header_timeout", writable=cycle is None or cycle.response_complete)
        elif self._in_body:  # (each read of the body is its latest byte: _now)
            if self.flow.read_paused:  # the app is not reading: not the client's silence
                self._now = now
            elif now - self._now > limits.body_timeout or now - self._headers_at > limits.body_deadline:
                if cycle is not None and not cycle.response_started:
                    cycle.scope[ANSWERED] = (RequestTimeout.status, RequestTimeout.code)  # type: ignore[literal-required]
                    self._answer("body_timeout")
                else:  # answered already (a 404 to a body still dripping): only cut
                    self.close("body_timeout")
        elif cycle is None or cycle.response_complete:
            idle = now - self._since
            if self._requests == 0 and not self._draining:
                if idle > limits.idle_timeout:
                    self.close("idle_timeout")
            elif idle > limits.keepalive_timeout:
                self.close(None)
