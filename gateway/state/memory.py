"""The state in this process: what one worker counts (the rules are in :mod:`gateway.state`).

Without Redis each worker keeps its own, so a key limited to N gets N per worker, and budgets
start again at 0 on restart: the README says so, and the gateway says so at start.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from ..keys import Key
from . import WINDOW, Admission, Lost, Ticket, Window


class _Counts:
    """One key's logs, leases and budget counters."""

    __slots__ = ("requests", "tokens", "token_sum", "leases", "budgets")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()  # admission times, oldest first
        self.tokens: OrderedDict[str, tuple[float, int]] = OrderedDict()  # lease -> (time, tokens), oldest first
        self.token_sum = 0
        self.leases: dict[str, float] = {}  # lease -> when it expires
        self.budgets: dict[str, tuple[str, float]] = {}  # budget name -> (period, spent)

    def expire(self, now: float, window: float) -> None:
        edge = now - window
        while self.requests and self.requests[0] <= edge:
            self.requests.popleft()
        while self.tokens:
            lease, (at, count) = next(iter(self.tokens.items()))
            if at > edge:
                break
            del self.tokens[lease]
            self.token_sum -= count

    def running(self, now: float) -> int:
        """Leases not expired; swept only when asked (at its limit), not on every admission."""
        for lease in [lease for lease, until in self.leases.items() if until <= now]:
            del self.leases[lease]
        return len(self.leases)

    def spent(self, name: str, period: str) -> float:
        held = self.budgets.get(name)
        return held[1] if held is not None and held[0] == period else 0.0

    def charge(self, name: str, period: str, amount: float) -> None:
        held = self.budgets.get(name)
        if held is not None and held[0] == period:
            self.budgets[name] = (period, held[1] + amount)
        elif held is None or held[0] < period:  # a new period starts at 0; a past one is gone
            self.budgets[name] = (period, amount)


class MemoryState:
    def __init__(self, lease_ttl: float = 15.0, window: float = WINDOW, clock: Callable[[], float] = time.time) -> None:
        self._lease_ttl = lease_ttl
        self._window = window  # a minute; shorter only in tests
        self._clock = clock
        self._keys: dict[str, _Counts] = {}

    def _counts(self, key: Key) -> _Counts:
        counts = self._keys.get(key.name)
        if counts is None:
            counts = self._keys[key.name] = _Counts()
        return counts

    async def admit(self, key: Key, lease: str, estimate: int) -> Admission:
        now = self._clock()
        counts = self._counts(key)
        counts.expire(now, self._window)
        limits = key.limits
        most = limits.max_concurrent
        if most is not None and len(counts.leases) >= most and counts.running(now) >= most:
            return Admission(None, "concurrency", retry_after=1.0)
        periods = []
        for budget in key.budgets:
            period, ends = budget.current(now)
            if counts.spent(budget.name, period) >= budget.cap:
                return Admission(None, "budget", retry_after=ends - now, budget=budget, budget_resets=ends)
            periods.append(period)
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if rpm is not None and len(counts.requests) >= rpm:
            must_leave = counts.requests[len(counts.requests) - rpm]  # for this one to fit
            return Admission(None, "requests", retry_after=must_leave + self._window - now)
        taken = min(estimate, tpm) if tpm is not None else estimate
        if tpm is not None and counts.token_sum + taken > tpm:
            return Admission(None, "tokens", retry_after=_free_at(counts, tpm - taken) + self._window - now)
        # admitted: counted everywhere at once
        if limits.max_concurrent is not None:
            counts.leases[lease] = now + self._lease_ttl
        if rpm is not None:
            counts.requests.append(now)
        if tpm is not None:
            counts.tokens[lease] = (now, taken)
            counts.token_sum += taken
        for budget, period in zip(key.budgets, periods, strict=True):
            if budget.unit == "tokens":
                counts.charge(budget.name, period, estimate)
        return Admission(Ticket(key, lease, estimate, tuple(periods), self, admitted=now),
                         requests=None if rpm is None else Window(rpm, rpm - len(counts.requests),
                                                                  counts.requests[0] + self._window - now),
                         tokens=None if tpm is None else Window(tpm, max(tpm - counts.token_sum, 0),
                                                                _oldest(counts) + self._window - now))

    async def settle(self, ticket: Ticket, tokens: int, cost: float, lost: Lost = lambda: None) -> None:
        now = self._clock()
        key = ticket.key
        counts = self._counts(key)
        counts.leases.pop(ticket.lease, None)
        logged = counts.tokens.pop(ticket.lease, None)
        if logged is not None:
            counts.token_sum -= logged[1]
        if key.limits.tokens_per_minute is not None and tokens > 0:
            counts.tokens[ticket.lease] = (now, tokens)  # the newest entry: the log stays in time order
            counts.token_sum += tokens
        for budget, period in zip(key.budgets, ticket.periods, strict=True):
            if budget.unit == "tokens":
                counts.charge(budget.name, period, tokens - ticket.estimate)
            elif cost > 0:
                counts.charge(budget.name, period, cost)

    async def undo(self, ticket: Ticket) -> None:
        await self.settle(ticket, 0, 0.0)
        if ticket.key.limits.requests_per_minute is not None:
            with contextlib.suppress(ValueError):  # else it has left the log already
                self._counts(ticket.key).requests.remove(ticket.admitted)

    async def refresh(self, tickets: list[Ticket]) -> None:
        until = self._clock() + self._lease_ttl
        for ticket in tickets:
            leases = self._counts(ticket.key).leases
            if ticket.lease in leases:
                leases[ticket.lease] = until

    async def spent(self, key: Key) -> list[float]:
        counts, now = self._counts(key), self._clock()
        return [counts.spent(b.name, b.current(now)[0]) for b in key.budgets]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass


def _free_at(counts: _Counts, room: int) -> float:
    """The time of the entry whose leaving the log leaves at most ``room`` tokens in it (there is
    one: ``room`` is at least 0, and an empty log holds 0)."""
    held = counts.token_sum
    for at, count in counts.tokens.values():
        held -= count
        if held <= room:
            return at
    raise AssertionError("unreachable: the whole log leaving leaves 0 tokens")


def _oldest(counts: _Counts) -> float:
    return next(iter(counts.tokens.values()))[0] if counts.tokens else 0.0
