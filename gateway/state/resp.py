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
    TimeoutError          no answer by the call's deadline (its connection is closed: the answer
                          may still come, and would be taken for the next call's)
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

Arg = str | int | float | bytes


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

    def __init__(self, url: str) -> None:
        self.address = Address.parse(url)
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    def call(self, command: bytes, deadline: float) -> Awaitable[Any]:
        """``command`` (:func:`packed`)'s answer, :class:`ReplyError` for an error answer. Written
        at once when the connection is open, so that the caller may go on with its own work while
        the answer travels, and await it after."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return self._connect_and_send(command, deadline)
        return protocol.send(command, deadline)

    async def _connect_and_send(self, command: bytes, deadline: float) -> Any:
        async with asyncio.timeout_at(deadline):
            protocol = await self._connect()
        return await protocol.send(command, deadline)

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
                await asyncio.gather(*(protocol.send(command, None) for command in hello))
            except BaseException:
                protocol.close(ConnectionError("the connection was given up on while it was opened"))
                raise
            self._protocol = protocol
            return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close(ConnectionError("the connection was closed"))
            self._protocol = None


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._waiting: deque[tuple[asyncio.Future[Any], asyncio.TimerHandle | None]] = deque()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one, unregistered

    def send(self, command: bytes, deadline: float | None) -> asyncio.Future[Any]:
        assert self._transport is not None
        waiter = self._loop.create_future()
        timer = None if deadline is None else self._loop.call_at(deadline, self._expired, waiter)
        self._waiting.append((waiter, timer))
        self._transport.write(command)
        return waiter

    def _expired(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())
            self.close(ConnectionError("a call before this one got no answer in time"))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                waiter, timer = self._waiting.popleft()
                if timer is not None:
                    timer.cancel()
                if waiter.done():  # its caller went (a cancelled request): the order holds
                    continue
                if isinstance(reply, ReplyError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError):  # not RESP, or an answer nobody asked for
            self.close(ConnectionError("the server's answer was not Redis's protocol"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(ConnectionError(f"the connection was lost{f': {exc}' if exc else ''}"))

    def close(self, error: ConnectionError) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        while self._waiting:
            waiter, timer = self._waiting.popleft()
            if timer is not None:
                timer.cancel()
            if not waiter.done():
                waiter.set_exception(error)
