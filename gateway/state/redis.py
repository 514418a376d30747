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
import hashlib
from collections.abc import Awaitable, Coroutine, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from time import time
from typing import Any

from ..background import Background, quietly
from ..keys import Budget, Key
from . import WINDOW, Admission, Lost, SharedStateDown, Ticket, Window, lua
from .resp import Arg, Connection, Late, ReplyError, packed

_KEEP = 1000  # ms past the window or a lease's TTL that its key lives
_DAY = 86400
_US = 1_000_000


class Script:
    """A Lua script, called by its SHA-1 (and sent whole once, when the server does not know it)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._evalsha = packed("EVALSHA", self.sha)[4:]  # past "*2\r\n"

    def loaded(self, evalsha: bytes) -> bytes:
        """An EVALSHA of this script as an EVAL (which loads it), the same arguments after."""
        head = evalsha.index(b"\r\n") + 2
        assert evalsha[head:].startswith(self._evalsha)
        return evalsha[:head] + packed("EVAL", self.source)[4:] + evalsha[head + len(self._evalsha):]


ADMIT, SETTLE, REFRESH = Script(lua.ADMIT), Script(lua.SETTLE), Script(lua.REFRESH)
EJECT, EJECTIONS = Script(lua.EJECT), Script(lua.EJECTIONS)
PUT_RESPONSE, DELETE_RESPONSE = Script(lua.PUT_RESPONSE), Script(lua.DELETE_RESPONSE)
SCRIPTS = (ADMIT, SETTLE, REFRESH, EJECT, EJECTIONS, PUT_RESPONSE, DELETE_RESPONSE)


class RedisState:
    def __init__(self, url: str, *, lease_ttl: float = 15.0, window: float = WINDOW, timeout: float = 0.05,
                 prefix: str = "glmgw:") -> None:
        self._window_us, self._ttl_us = int(window * _US), int(lease_ttl * _US)
        self._keep_log, self._keep_cc = int(window * 1000) + _KEEP, int(lease_ttl * 1000) + _KEEP
        self._timeout = timeout
        self._prefix = prefix
        # the scripts loaded on every new connection: a call's first EVALSHA then needs no second trip
        self._connection = Connection(url, [packed("SCRIPT", "LOAD", script.source) for script in SCRIPTS])
        self._where = self._connection.address.where
        self._packed: dict[str, tuple[Key, tuple[str, ...], bytes, tuple[float, ...]]] = {}
        self._undoing = Background()

    def __repr__(self) -> str:
        return f"RedisState({self._where})"

    async def _call(self, *command: Arg) -> Any:
        return await self._send(packed(*command))

    def _send(self, command: bytes, script: Script | None = None, late: Late | None = None) -> Coroutine[Any, Any, Any]:
        """One command, written at once (when connected), and its answer within the timeout,
        connecting included; ``script``'s EVALSHA that the server does not know (a new or
        restarted server) is sent again whole, as EVAL. No retries otherwise: a script retried may
        have run once already, and been counted. An answer after the timeout goes to ``late``."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        return self._answer(self._connection.call(command, deadline, late), command, script, deadline, late)

    async def _answer(self, answer: Awaitable[Any], command: bytes, script: Script | None, deadline: float,
                      late: Late | None) -> Any:
        try:
            try:
                return await answer
            except ReplyError as error:
                if script is None or not str(error).startswith("NOSCRIPT"):
                    raise
                return await self._connection.call(script.loaded(command), deadline, late)
        except (ReplyError, OSError, TimeoutError) as error:
            # from None: the cause's text is ours to check, so it cannot carry a password out
            raise SharedStateDown(self._explain(error), late=isinstance(error, TimeoutError)) from None

    async def _run(self, script: Script, keys: list[str], args: Sequence[Arg] = (), late: Late | None = None) -> Any:
        return await self._send(packed("EVALSHA", script.sha, len(keys), *keys, *args), script, late)

    def _explain(self, error: BaseException) -> str:
        what = str(error) or f"no answer within {self._timeout * 1000:g} ms"
        if secret := self._connection.address.password:
            what = what.replace(secret, "***")
        return f"Redis at {self._where}: {type(error).__name__}: {what}"

    def _logs(self, name: str) -> list[str]:
        """req, tokens, cc (in :mod:`.lua`) of one key."""
        base = f"{self._prefix}k:{{{name}}}:"
        return [base + "req", base + "tokens", base + "cc"]

    def _counter(self, name: str, budget: Budget, period: str) -> str:
        return f"{self._prefix}b:{{{name}}}:{budget.name}:{period}"

    def admit(self, key: Key, lease: str, estimate: int) -> Awaitable[Admission]:
        """Written to Redis at once (when connected): the caller's own work runs during the round
        trip, until it awaits the answer."""
        now = time()
        prefix, periods, ends = self._admit_command(key, now)
        ticket = Ticket(key, lease, estimate, periods, self)
        answer = self._send(prefix + _bulk(lease) + _bulk(b"%d" % estimate), ADMIT, self._undo_if_admitted(ticket))
        return self._admission(answer, ticket, now, ends)

    def _undo_if_admitted(self, ticket: Ticket) -> Late:
        """For an admission whose answer came too late: the request went on without it (on the
        process's own counts, or refused), or left, so what it was counted here is undone."""
        def late(out: Any) -> None:
            if not isinstance(out, BaseException) and int(out[0]) == 0:  # (else nothing was counted)
                self._undoing.run(quietly(self.undo(ticket), SharedStateDown))
        return late

    async def _admission(self, answer: Awaitable[Any], ticket: Ticket, now: float,
                         ends: tuple[float, ...]) -> Admission:
        out = await answer
        key = ticket.key
        code = int(out[0])
        if code == 2:
            index = int(out[1]) - 1
            return Admission(None, "budget", retry_after=ends[index] - now, budget=key.budgets[index],
                             budget_resets=ends[index])
        if code == 1:
            return Admission(None, "concurrency", retry_after=1.0)
        if code:
            return Admission(None, "requests" if code == 3 else "tokens", retry_after=int(out[1]) / _US)
        rpm, tpm = key.limits.requests_per_minute, key.limits.tokens_per_minute
        return Admission(ticket, requests=None if rpm is None else Window(rpm, int(out[1]), int(out[2]) / _US),
                         tokens=None if tpm is None else Window(tpm, int(out[3]), int(out[4]) / _US))

    def _admit_command(self, key: Key, now: float) -> tuple[bytes, tuple[str, ...], tuple[float, ...]]:
        """ADMIT for ``key`` but its last two arguments, packed once per key and budget period
        (-20 us of a limited request's path, measured in the gateway at 200 req/s)."""
        current = [budget.current(now) for budget in key.budgets]
        periods = tuple(period for period, _ in current)
        cached = self._packed.get(key.name)
        if cached is not None and cached[0] is key and cached[1] == periods:
            return cached[2], periods, cached[3]
        limits = key.limits
        keys = self._logs(key.name) + [self._counter(key.name, b, p) for b, p in zip(key.budgets, periods, strict=True)]
        args: list[Arg] = [_or_none(limits.requests_per_minute), _or_none(limits.tokens_per_minute),
                           _or_none(limits.max_concurrent), self._window_us, self._ttl_us, self._keep_log,
                           self._keep_cc]
        for budget, (_, end) in zip(key.budgets, current, strict=True):
            args += [budget.cap, 1 if budget.unit == "tokens" else 0, int(end) + _DAY]
        command = packed("EVALSHA", ADMIT.sha, len(keys), *keys, *args)
        head = command.index(b"\r\n") + 2  # "*<count>\r\n": two arguments more follow
        prefix = b"*%d\r\n%s" % (len(keys) + len(args) + 5, command[head:])
        ends = tuple(end for _, end in current)
        if len(self._packed) > 10_000:  # keys come and go with reloads
            self._packed.clear()
        self._packed[key.name] = (key, periods, prefix, ends)
        return prefix, periods, ends

    async def settle(self, ticket: Ticket, tokens: int, cost: float, lost: Lost = lambda: None) -> None:
        await self._settle(ticket, tokens, cost, undo=False, lost=lost)

    async def undo(self, ticket: Ticket) -> None:
        await self._settle(ticket, 0, 0.0, undo=True, lost=lambda: None)

    async def _settle(self, ticket: Ticket, tokens: int, cost: float, *, undo: bool, lost: Lost) -> None:
        key = ticket.key
        keys = self._logs(key.name)
        limits = key.limits
        tpm = limits.tokens_per_minute
        args: list[Arg] = [ticket.lease, 0 if tpm is None else min(ticket.estimate, tpm),
                           0 if tpm is None else tokens, self._keep_log, 1 if undo else 0]
        for budget, period in zip(key.budgets, ticket.periods, strict=True):
            amount = tokens - ticket.estimate if budget.unit == "tokens" else max(cost, 0.0)
            if amount:
                keys.append(self._counter(key.name, budget, period))
                args += [amount, _ends(budget.period, period) + _DAY]
        if tpm is not None or limits.max_concurrent is not None or len(keys) > 3 or (
                undo and limits.requests_per_minute is not None):  # else there is nothing to change
            def late(out: Any) -> None:
                if isinstance(out, BaseException):
                    lost()
            try:
                await self._run(SETTLE, keys, args, late)
            except SharedStateDown as down:
                if not down.late:  # else the script was sent, and its late answer says what became of it
                    lost()
                raise

    async def refresh(self, tickets: list[Ticket]) -> None:
        leases: dict[str, list[str]] = {}
        for ticket in tickets:
            if ticket.key.limits.max_concurrent is not None:  # else it took no lease
                leases.setdefault(ticket.key.name, []).append(ticket.lease)
        # one script per key, all written at once: a Cluster may hold each key in another slot
        await asyncio.gather(*(self._run(REFRESH, [self._logs(name)[2]], [self._ttl_us, self._keep_cc, *running])
                               for name, running in leases.items()))

    async def spent(self, key: Key) -> list[float]:
        if not key.budgets:
            return []
        now = time()
        counters = [self._counter(key.name, b, b.current(now)[0]) for b in key.budgets]
        held = await self._call("MGET", *counters)
        return [float(value) if value is not None else 0.0 for value in held]

    # Provider health shared by the replicas: ejected until a time, on the server's clock.

    async def eject(self, provider: str, seconds: float) -> None:
        await self._run(EJECT, [self._prefix + "ejected"], [provider, max(int(seconds * _US), 1)])

    async def ejections(self) -> dict[str, float]:
        """Each provider ejected now -> the seconds it has left."""
        out = await self._run(EJECTIONS, [self._prefix + "ejected"])
        return {out[i].decode(): int(out[i + 1]) / _US for i in range(0, len(out), 2)}

    async def restore(self, provider: str) -> None:
        await self._call("HDEL", self._prefix + "ejected", provider)

    # Stored /v1/responses, each readable and deletable only by the key that stored it.

    def _response(self, response_id: str) -> str:
        return f"{self._prefix}r:{response_id}"

    async def put_response(self, response_id: str, owner: str, response: bytes, conversation: bytes,
                           ttl: float) -> None:
        await self._run(PUT_RESPONSE, [self._response(response_id)],
                        [owner, response, conversation, max(int(ttl * 1000), 1)])

    async def get_response(self, response_id: str, owner: str) -> tuple[bytes, bytes] | None:
        held: Sequence[Any] = await self._call("HMGET", self._response(response_id), "owner", "response",
                                               "conversation")
        if held[0] != owner.encode() or held[1] is None or held[2] is None:
            return None
        return held[1], held[2]

    async def delete_response(self, response_id: str, owner: str) -> bool:
        return bool(await self._run(DELETE_RESPONSE, [self._response(response_id)], [owner]))

    async def ping(self) -> bool:
        try:
            return await self._call("PING") == b"PONG"
        except SharedStateDown:
            return False

    async def close(self) -> None:
        await self._undoing.wait(1.0)
        self._connection.close()


def _bulk(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _or_none(limit: int | None) -> int:
    return -1 if limit is None else limit


@lru_cache(maxsize=64)
def _ends(kind: str, period: str) -> int:
    """The epoch second a period (as :meth:`Budget.current` names it) ends."""
    budget = Budget("tokens", "day" if kind == "day" else "month", 0)
    start = datetime.strptime(period, "%Y-%m-%d" if kind == "day" else "%Y-%m").replace(tzinfo=UTC)
    return int(budget.current(start.timestamp())[1])
