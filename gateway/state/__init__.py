"""State every replica must agree on (issue 14), behind one small interface: in this process
(:mod:`.memory`) or on Redis (:mod:`.redis`, ``GATEWAY_REDIS_URL``).

A virtual key's limits and budget are two atomic steps per request::

    admit(key, lease, estimate)  -> Admission   every limit and budget of the key checked, and the
                                                request counted in all of them, or in none
    settle(ticket, tokens, cost, lost)          the answer's real usage replaces the estimate, and
                                                the concurrency lease ends; ``lost()`` once it is
                                                not known to have been counted (an answer past the
                                                time budget may come yet, and then it was)
    undo(ticket)                                a request that went nowhere: as if never admitted
    refresh(tickets)                            the leases of requests still running, extended

The rules, the same in both stores:

- ``requests_per_minute`` and ``tokens_per_minute`` are sliding logs over the last 60 s, exact over
  any rolling minute (a fixed window lets twice the limit through at its edge). A request is logged
  with its estimate (its ``max_tokens``, or the configured default, never more than the limit) when
  admitted; its settled tokens replace the estimate, logged at the time the answer ended.
- ``max_concurrent`` holds leases that expire ``lease_ttl`` seconds after they were last refreshed:
  a replica that dies frees its slots within that time.
- A budget is a counter per period (``2026-12``, ``2026-12-01``, UTC) that expires after its
  period. A token budget is charged the estimate on admission and corrected on settling, so
  requests running at once cannot all pass the cap; a USD budget is charged the cost on settling.
  A key is refused once a counter has reached its cap: the last request admitted may pass it by
  what it used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ..keys import Budget, Key

WINDOW = 60.0  #: seconds of the requests and tokens logs
Refusal = Literal["requests", "tokens", "concurrency", "budget"]
Lost = Callable[[], None]  #: told that a settlement is not known to have been counted


@dataclass(slots=True)
class Window:
    """What a limit leaves after this request (for the ``x-ratelimit-*`` headers)."""

    limit: int
    remaining: int
    reset: float  # seconds until the oldest entry leaves the log (one more fits)


@dataclass(slots=True)
class Ticket:
    """An admitted request, as settling needs it."""

    key: Key
    lease: str  # the request's entry in the logs and leases
    estimate: int  # tokens it was admitted on
    periods: tuple[str, ...]  # each budget's period at admission, in the key's budget order
    store: State  # the store that admitted it (the local one while the shared one was down)
    admitted: float = 0.0  # when, on the in-process store's clock (for undo)


@dataclass(slots=True)
class Admission:
    ticket: Ticket | None  # None: refused
    refused: Refusal | None = None
    retry_after: float = 0.0  # seconds until the request could be admitted
    budget: Budget | None = None  # the budget that refused it
    budget_resets: float = 0.0  # epoch seconds its period ends
    requests: Window | None = None
    tokens: Window | None = None


class SharedStateDown(Exception):
    """The shared store did not answer in its time budget, or failed: the caller decides whether
    to serve on local counts (fail open) or refuse (fail closed). ``late``: no answer in the time
    budget, so the step may yet have been done."""

    def __init__(self, message: str, *, late: bool = False) -> None:
        super().__init__(message)
        self.late = late


class State(Protocol):
    def admit(self, key: Key, lease: str, estimate: int) -> Awaitable[Admission]:
        """Asked when called (Redis: written at once), answered when awaited: a caller may do its
        own work in between."""
        ...

    async def settle(self, ticket: Ticket, tokens: int, cost: float, lost: Lost = ...) -> None: ...

    async def undo(self, ticket: Ticket) -> None:
        """An admission whose request went nowhere (no route could take it): counted nowhere."""
        ...

    async def refresh(self, tickets: list[Ticket]) -> None: ...

    async def spent(self, key: Key) -> list[float]:
        """What each of the key's budgets holds in its current period (estimates included)."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
