"""One connection to Redis for the whole process, multiplexed: a call writes its command at once
and its answer is the next one the server sends back (Redis answers a connection in the order it
was asked), so no call waits for a free connection or opens one. hiredis packs and parses (C).

Why not redis-py (issue 14 names it): its pool, locks and stream reader cost ~60 us of a limited
key's admission here, a fifth of the issue's 0.3 ms (``python -m bench.state``), and its own
timeout would have to be wrapped again; what the gateway asks of Redis is a few commands on one
socket.

Errors, for :class:`~gateway.state.redis.RedisState` to map in one place::

    ReplyError            the server answered with an error (NOSCRIPT, WRONGPASS, WRONGTYPE, ...)
    OSError
      ConnectionError     cannot connect, or the connection was lost with the call waiting
    TimeoutError          no answer by the call's deadline (the connection stays, and the answer
                          is matched to it when it comes; a server silent for GRACE after a
                          deadline passed has its connection closed, and the next call connects)

A call given up on (its deadline passed, or its caller was cancelled) may still have run: what
became of it goes to its ``late``, once, when that is known (the answer, a ReplyError, or the
ConnectionError that closed the connection first; for a deadline that passed while connecting,
nothing was sent, and ``late`` has the TimeoutError itself).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

Arg = str | int | float | bytes
Late = Callable[[Any], None]  # what became of a call its caller gave up on (see above)
GRACE = 1.0  # seconds a connection owing an answer given up on may stay silent before it is closed


class ReplyError(Exception):
    """The server's answer to a command was an error."""


def packed(*args: Arg) -> bytes:
    """A command in RESP (ints in decimal, floats by ``repr``), packed in C."""
    return hiredis.pack_command(args)  # type: ignore[arg-type,no-any-return]


@dataclass(frozen=True)
class Address:
    """What a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL says."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def where(self) -> str:
        """The address without who: for messages."""
        if self.path is not None:
            return f"unix://{self.path}?db={self.db}"
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            scheme = f"{parts.scheme}:" if parts.scheme else "none"
            raise ValueError(f"a Redis URL starts redis://, rediss:// or unix://, not {scheme}")
        query = parse_qs(parts.query)
        db = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0] or "0"
        if not db.isdigit():
            raise ValueError("the Redis database in the URL (its path, or ?db=) is a number")
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                   path=parts.path if parts.scheme == "unix" else None, tls=parts.scheme == "rediss",
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password is not None else None, db=int(db))


class Connection:
    """Calls to one Redis, each answered by ``deadline`` (the loop's clock) or failed."""

    def __init__(self, url: str, first: Sequence[bytes] = ()) -> None:
        self.address = Address.parse(url)
        # commands each new connection sends before any call (after AUTH, SELECT), their errors ignored
        self._first = tuple(first)
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    def call(self, command: bytes, deadline: float, late: Late | None = None) -> Awaitable[Any]:
        """``command`` (:func:`packed`)'s answer, :class:`ReplyError` for an error answer. Written
        at once when the connection is open, so that the caller may go on with its own work while
        the answer travels, and await it after. An answer that comes after the deadline goes to
        ``late``, if given (the caller has gone on without it), and so does the error that ends
        the connection first."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return self._connect_and_send(command, deadline, late)
        return protocol.send(command, deadline, late)

    async def _connect_and_send(self, command: bytes, deadline: float, late: Late | None) -> Any:
        try:
            async with asyncio.timeout_at(deadline):
                protocol = await self._connect()
        except TimeoutError as error:
            if late is not None:  # nothing was sent: that is what became of it
                late(error)
            raise
        return await protocol.send(command, deadline, late)

    async def _connect(self) -> _Protocol:
        async with self._connecting:  # one connection, however many calls find none
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            where = self.address
            tls = ssl.create_default_context() if where.tls else None
            if where.path is not None:
                transport, protocol = await loop.create_unix_connection(_Protocol, where.path, ssl=tls)
            else:
                transport, protocol = await loop.create_connection(_Protocol, where.host, where.port, ssl=tls)
            protocol.connection_made(transport)  # uvloop may call it only on the loop's next turn
            try:
                hello = []
                if where.password is not None:
                    hello.append(packed("AUTH", *filter(None, (where.username,)), where.password))
                if where.db:
                    hello.append(packed("SELECT", where.db))
                said = await asyncio.gather(*(protocol.send(command, None) for command in [*hello, *self._first]),
                                            return_exceptions=True)
                for i, answer in enumerate(said):  # a first command may be refused (a user without SCRIPT)
                    if isinstance(answer, BaseException) and (i < len(hello) or not isinstance(answer, ReplyError)):
                        raise answer
            except BaseException:
                protocol.close(ConnectionError("the connection was given up on while it was opened"))
                raise
            self._protocol = protocol
            return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close(ConnectionError("the connection was closed"))
            self._protocol = None


class _Call:
    __slots__ = ("waiter", "timer", "late", "expired")

    def __init__(self, waiter: asyncio.Future[Any], late: Late | None) -> None:
        self.waiter, self.late = waiter, late
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._waiting: deque[_Call] = deque()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._silence: asyncio.TimerHandle | None = None
        self._owed = 0  # answers still to come to calls past their deadline
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one, unregistered

    def send(self, command: bytes, deadline: float | None, late: Late | None = None) -> asyncio.Future[Any]:
        assert self._transport is not None
        call = _Call(self._loop.create_future(), late)
        if deadline is not None:
            call.timer = self._loop.call_at(deadline, self._expired, call)
        self._waiting.append(call)
        self._transport.write(command)
        return call.waiter

    def _expired(self, call: _Call) -> None:
        # The caller is told at once; the connection stays, its answer still to be matched (and
        # given to ``late``), unless the server says nothing more for GRACE: then it is closed.
        call.expired = True
        self._owed += 1
        if not call.waiter.done():
            call.waiter.set_exception(TimeoutError())
        if self._silence is None:
            self._wait_for_the_owed()

    def _wait_for_the_owed(self) -> None:
        self._silence = self._loop.call_later(GRACE, self.close, ConnectionError(
            f"the server answered nothing for {GRACE:g} s"))

    def data_received(self, data: bytes) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                call = self._waiting.popleft()
                if call.timer is not None:
                    call.timer.cancel()
                if call.expired:
                    self._owed -= 1
                if call.waiter.done():  # given up on (a timeout, a cancelled request): the order holds
                    if call.late is not None:
                        call.late(reply)
                elif isinstance(reply, ReplyError):
                    call.waiter.set_exception(reply)
                else:
                    call.waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # not RESP, or an answer nobody asked for
            self.close(ConnectionError("the server's answer was not Redis's protocol"))
            return
        if self._owed:
            self._wait_for_the_owed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(ConnectionError(f"the connection was lost{f': {exc}' if exc else ''}"))

    def close(self, error: ConnectionError) -> None:
        self.closed = True
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self._transport is not None:
            self._transport.close()
        while self._waiting:
            call = self._waiting.popleft()
            if call.timer is not None:
                call.timer.cancel()
            if not call.waiter.done():
                call.waiter.set_exception(error)
            elif call.late is not None:  # given up on, and now it will never be answered
                call.late(error)
