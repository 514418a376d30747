"""The state on Redis, shared by every replica (``GATEWAY_REDIS_URL``): the rules of
:mod:`gateway.state`, each step one Lua script (:mod:`.lua`), so one round trip and atomic.

Every call has ``timeout`` seconds (the issue's 50 ms) from start to answer, connecting included,
and fails as :class:`SharedStateDown` otherwise: whether a request goes on without the shared state
is the caller's choice, never a hang. Every key written expires: the logs a second past the window,
the leases a second past their TTL, a budget's counter a day past its period, a stored response
with its TTL, so a key or provider no longer used leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from time import time
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from ..keys import Budget, Key
from . import WINDOW, Admission, SharedStateDown, Ticket, Window, lua

T = TypeVar("T")
_KEEP = 1000  # ms past the window or a lease's TTL that its key lives
_DAY = 86400
_US = 1_000_000
Arg = str | int | float | bytes


class RedisState:
    def __init__(self, url: str, *, lease_ttl: float = 15.0, window: float = WINDOW, timeout: float = 0.05,
                 prefix: str = "glmgw:") -> None:
        self._window_us, self._ttl_us = int(window * _US), int(lease_ttl * _US)
        self._keep_log, self._keep_cc = int(window * 1000) + _KEEP, int(lease_ttl * 1000) + _KEEP
        self._timeout = timeout
        self._prefix = prefix
        self._where, self._secrets = _redacted(url)
        # The call's deadline is _run's, over all of it (connecting, a script loaded again); a
        # socket_timeout too would only cost: redis-py wraps each send in wait_for, a new Task
        # (+15 us p50 on an admit). No retries: a retried script may have run once already, and
        # been counted; a connection the server closed is replaced when the pool hands it out.
        self._pool = ConnectionPool.from_url(url, socket_connect_timeout=timeout, socket_timeout=None,
                                            retry=Retry(NoBackoff(), 0))
        self._client = Redis(connection_pool=self._pool)
        script = self._client.register_script
        self._admit, self._settle, self._refresh = script(lua.ADMIT), script(lua.SETTLE), script(lua.REFRESH)
        self._eject, self._ejections = script(lua.EJECT), script(lua.EJECTIONS)
        self._put_response, self._delete_response = script(lua.PUT_RESPONSE), script(lua.DELETE_RESPONSE)

    def __repr__(self) -> str:
        return f"RedisState({self._where})"

    async def _run(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (RedisError, OSError, TimeoutError) as error:
            # from None: the cause's text is ours to check, so it cannot carry a password out
            raise SharedStateDown(self._explain(error)) from None

    async def _evalsha(self, script: AsyncScript, keys: list[str], args: list[Arg]) -> Any:
        """``script(keys, args)`` on a connection of the pool, past redis-py's client layers
        (retries, observability): -40 us p50 per admit, -75 us of CPU per admit and settle. The
        command is packed here (:func:`packed`): redis-py's packer took a third of a call's CPU."""
        connection = await self._pool.get_connection()
        try:
            await connection.send_packed_command(packed("EVALSHA", script.sha, len(keys), *keys, *args),
                                                 check_health=False)
            try:
                return await connection.read_response()
            except NoScriptError:  # a new or restarted server
                await connection.send_command("SCRIPT", "LOAD", script.script)
                await connection.read_response()
                await connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return await connection.read_response()
        finally:
            # a call cut short disconnected it (redis-py does on any error or cancellation while
            # sending or reading), so no late answer waits in it for the next call
            await self._pool.release(connection)

    def _explain(self, error: BaseException) -> str:
        what = str(error) or f"no answer within {self._timeout * 1000:g} ms"
        for secret in self._secrets:
            what = what.replace(secret, "***")
        return f"Redis at {self._where}: {type(error).__name__}: {what}"

    def _logs(self, name: str) -> list[str]:
        """req, tok, tokn, toksum, cc (in :mod:`.lua`) of one key."""
        base = f"{self._prefix}k:{{{name}}}:"
        return [base + "req", base + "tok", base + "tokn", base + "toksum", base + "cc"]

    def _counter(self, name: str, budget: Budget, period: str) -> str:
        return f"{self._prefix}b:{{{name}}}:{budget.name}:{period}"

    async def admit(self, key: Key, lease: str, estimate: int) -> Admission:
        now = time()
        limits = key.limits
        rpm, tpm, most = limits.requests_per_minute, limits.tokens_per_minute, limits.max_concurrent
        keys = self._logs(key.name)
        args: list[Arg] = [lease, estimate, _or_none(rpm), _or_none(tpm), _or_none(most), self._window_us,
                           self._ttl_us, self._keep_log, self._keep_cc]
        periods, ends = [], []
        for budget in key.budgets:
            period, end = budget.current(now)
            periods.append(period)
            ends.append(end)
            keys.append(self._counter(key.name, budget, period))
            args += [budget.cap, 1 if budget.unit == "tokens" else 0, int(end) + _DAY]
        out = await self._run(self._evalsha(self._admit, keys, args))
        code = int(out[0])
        if code == 2:
            index = int(out[1]) - 1
            return Admission(None, "budget", retry_after=ends[index] - now, budget=key.budgets[index],
                             budget_resets=ends[index])
        if code == 1:
            return Admission(None, "concurrency", retry_after=1.0)
        if code:
            return Admission(None, "requests" if code == 3 else "tokens", retry_after=int(out[1]) / _US)
        return Admission(Ticket(key, lease, estimate, tuple(periods), self),
                         requests=None if rpm is None else Window(rpm, int(out[1]), int(out[2]) / _US),
                         tokens=None if tpm is None else Window(tpm, int(out[3]), int(out[4]) / _US))

    async def settle(self, ticket: Ticket, tokens: int, cost: float) -> None:
        key = ticket.key
        keys = self._logs(key.name)[1:]
        args: list[Arg] = [ticket.lease, tokens if key.limits.tokens_per_minute is not None else 0, self._keep_log]
        for budget, period in zip(key.budgets, ticket.periods, strict=True):
            amount = tokens - ticket.estimate if budget.unit == "tokens" else max(cost, 0.0)
            if amount:
                keys.append(self._counter(key.name, budget, period))
                args += [amount, _ends(budget.period, period) + _DAY]
        await self._run(self._evalsha(self._settle, keys, args))

    async def refresh(self, tickets: list[Ticket]) -> None:
        leases: dict[str, list[str]] = {}
        for ticket in tickets:
            if ticket.key.limits.max_concurrent is not None:  # else it took no lease
                leases.setdefault(ticket.key.name, []).append(ticket.lease)
        if leases:
            await self._run(self._refresh_all(leases))

    async def _refresh_all(self, leases: dict[str, list[str]]) -> None:
        # one script per key, in one pipeline: a Cluster may hold each key in another slot
        async with self._client.pipeline(transaction=False) as pipe:
            for name, running in leases.items():
                await self._refresh([self._logs(name)[4]], [self._ttl_us, self._keep_cc, *running], client=pipe)
            await pipe.execute()

    async def spent(self, key: Key) -> list[float]:
        if not key.budgets:
            return []
        now = time()
        counters = [self._counter(key.name, b, b.current(now)[0]) for b in key.budgets]
        held = await self._run(self._client.mget(counters))
        return [float(value) if value is not None else 0.0 for value in held]

    # Provider health shared by the replicas: ejected until a time, on the server's clock.

    async def eject(self, provider: str, seconds: float) -> None:
        await self._run(self._eject([self._prefix + "ejected"], [provider, max(int(seconds * _US), 1)]))

    async def ejections(self) -> dict[str, float]:
        """Each provider ejected now -> the seconds it has left."""
        out = await self._run(self._ejections([self._prefix + "ejected"]))
        return {out[i].decode(): int(out[i + 1]) / _US for i in range(0, len(out), 2)}

    async def restore(self, provider: str) -> None:
        await self._run(self._client.hdel(self._prefix + "ejected", provider))

    # Stored /v1/responses, each readable and deletable only by the key that stored it.

    def _response(self, response_id: str) -> str:
        return f"{self._prefix}r:{response_id}"

    async def put_response(self, response_id: str, owner: str, response: bytes, conversation: bytes,
                           ttl: float) -> None:
        await self._run(self._put_response([self._response(response_id)],
                                           [owner, response, conversation, max(int(ttl * 1000), 1)]))

    async def get_response(self, response_id: str, owner: str) -> tuple[bytes, bytes] | None:
        held: Sequence[Any] = await self._run(
            self._client.hmget(self._response(response_id), ["owner", "response", "conversation"]))
        if held[0] != owner.encode() or held[1] is None or held[2] is None:
            return None
        return held[1], held[2]

    async def delete_response(self, response_id: str, owner: str) -> bool:
        return bool(await self._run(self._delete_response([self._response(response_id)], [owner])))

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self._client.ping()))
        except SharedStateDown:
            return False

    async def close(self) -> None:
        await self._pool.disconnect()


def packed(*args: Arg) -> bytes:
    """A command in RESP, as redis-py's encoder writes it (ints in decimal, floats by ``repr``)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _or_none(limit: int | None) -> int:
    return -1 if limit is None else limit


@lru_cache(maxsize=64)
def _ends(kind: str, period: str) -> int:
    """The epoch second a period (as :meth:`Budget.current` names it) ends."""
    budget = Budget("tokens", "day" if kind == "day" else "month", 0)
    start = datetime.strptime(period, "%Y-%m-%d" if kind == "day" else "%Y-%m").replace(tzinfo=UTC)
    return int(budget.current(start.timestamp())[1])


def _redacted(url: str) -> tuple[str, tuple[str, ...]]:
    """Where the URL points, for messages, and the secrets in it that no message may show."""
    parts = urlsplit(url)
    secret = parts.password
    where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
    return where, tuple({secret, unquote(secret)}) if secret else ()
