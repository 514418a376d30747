"""The attempt loop's policy (issue 10): the order routes are tried in, when a failed attempt is
tried again and after how long, the deadlines one attempt runs under, and what the client is told
when no route answered.

Trying the next route is a fallback, not a retry: neither ``retry.attempts`` nor the retry budget
stops a request from trying its remaining routes. A retry is a second try of the same route, only
for failures that a second try can cure (``UpstreamError.retry_same``) and only while nothing has
reached the client.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence

from .config import Retry, Route, Timeout
from .errors import UpstreamError, UpstreamRateLimited, UpstreamTimeout
from .health import Health


class RetryBudget:
    """Envoy's default retry budget: at most max(3, 20% of the requests in flight) retries in
    flight, so that a dead upstream is not answered with a retry storm."""

    __slots__ = ("ratio", "minimum", "requests", "retries")

    def __init__(self, ratio: float = 0.2, minimum: int = 3) -> None:
        self.ratio, self.minimum = ratio, minimum
        self.requests = 0  # in flight
        self.retries = 0  # in flight

    def allows(self) -> bool:
        return self.retries < max(self.minimum, self.ratio * self.requests)


def order(routes: Sequence[Route], health: Health) -> list[Route]:
    """The routes of one request in the order they are tried: by ``weight`` when any route gives
    one (a weighted random order per request; weight 0 only after the others), else as listed;
    ejected providers after the others, still in that order (Envoy's panic routing: a cool-down
    never turns a recovered upstream into a 503)."""
    if any(route.weight is not None for route in routes):
        weighted = [r for r in routes if (r.weight if r.weight is not None else 1.0) > 0]
        # Efraimidis-Spirakis: sorting by u ** (1 / w) draws without replacement, weight-proportionally
        weighted.sort(key=lambda r: random.random() ** (1.0 / (r.weight if r.weight is not None else 1.0)),
                      reverse=True)
        routes = [*weighted, *(r for r in routes if r.weight == 0)]
    healthy = [r for r in routes if not health.ejected(r.provider.name)]
    return healthy if len(healthy) == len(routes) else [*healthy, *(r for r in routes if r not in healthy)]


def pause(error: UpstreamError, retry: Retry, tries: int) -> float | None:
    """Seconds to wait before trying the same route again after its ``tries``-th failed try, or
    None when it is not tried again: exponential backoff with full jitter, at least Retry-After.
    A Retry-After longer than the longest backoff sends the request to its next route instead."""
    if not error.retry_same or tries >= retry.attempts:
        return None
    if error.retry_after is not None and error.retry_after > retry.backoff_max:
        return None
    wait = random.uniform(0, min(retry.backoff_max, retry.backoff_base * 2 ** (tries - 1)))
    return max(wait, error.retry_after or 0.0)


def most_meaningful(errors: Iterable[UpstreamError]) -> UpstreamError:
    """What the client is told when every attempt failed: a rate limit (the shortest Retry-After)
    over a timeout, a timeout over anything else (502); the last of a kind when they tie."""
    def rank(error: UpstreamError) -> tuple[int, float]:
        if isinstance(error, UpstreamRateLimited):
            return 0, error.retry_after if error.retry_after is not None else float("inf")
        return (1 if isinstance(error, UpstreamTimeout) else 2), 0.0
    ranked = list(errors)
    return min(reversed(ranked), key=rank)


class Clock:
    """One attempt's deadlines, as one ``asyncio.Timeout`` rescheduled as the attempt goes (one
    timer per attempt, not one per read). A client library's read timeout measures only the gap
    between chunks, which an upstream dripping a byte a second never trips: here the first-byte,
    total and request deadlines are the gateway's own."""

    __slots__ = ("timer", "_loop", "_first_end", "_idle", "_hard", "_hard_is_total", "headers", "first")

    def __init__(self, timer: asyncio.Timeout, timeout: Timeout, provider_end: float, request_end: float) -> None:
        self.timer = timer
        self._loop = asyncio.get_running_loop()
        self._first_end = self._loop.time() + timeout.first_byte
        self._idle = timeout.idle
        self._hard = min(provider_end, request_end)
        self._hard_is_total = provider_end <= request_end
        self.headers = False  # the response headers are in
        self.first = False  # the first data event (or a JSON answer's headers) is in

    def waiting(self) -> None:
        """About to wait on the upstream: idle counts from now."""
        when = self._hard
        if not self.first:
            when = min(when, self._first_end)
        if self.headers:
            when = min(when, self._loop.time() + self._idle)
        self.timer.reschedule(when)

    def sending(self) -> None:
        """About to write to the client: that time is never the upstream's idleness."""
        self.timer.reschedule(self._hard)

    def expired(self, provider: str) -> UpstreamTimeout:
        """The timeout for the deadline that has just passed."""
        now = self._loop.time()
        if now >= self._hard:
            what = "its total time on this provider" if self._hard_is_total else "the request's deadline"
        elif not self.first and now >= self._first_end:
            what = "its first_byte timeout before answering"
        else:
            what = f"its idle timeout ({self._idle:g} s without a byte)"
        return UpstreamTimeout(f"{provider} ran past {what}")
