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
import weakref
from collections.abc import Iterable, Sequence

from .config import Retry, Route, Timeout
from .errors import PoolExhausted, UpstreamError, UpstreamRateLimited, UpstreamTimeout
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
    over a full pool (503, Retry-After: come back soon) over a timeout over anything else (502); the
    last of a kind when they tie."""
    def rank(error: UpstreamError) -> tuple[int, float]:
        if isinstance(error, UpstreamRateLimited):
            return 0, error.retry_after if error.retry_after is not None else float("inf")
        if isinstance(error, PoolExhausted):
            return 1, 0.0
        return (2 if isinstance(error, UpstreamTimeout) else 3), 0.0
    ranked = list(errors)
    return min(reversed(ranked), key=rank)


class Clock:
    """One attempt's deadlines, checked by the loop's watchdog every ``TICK`` seconds.

    A client library's read timeout measures only the gap between chunks, which an upstream
    dripping a byte a second never trips: here the first-byte, total and request deadlines are the
    gateway's own. Each read only notes when its wait began (``waiting``) or that the attempt is
    writing to the client instead (``sending``: never the upstream's idleness); the watchdog works
    out which deadline has passed and cancels the attempt's task. Per attempt that is a set insert,
    per read two attribute writes: a timer per attempt was 3% of a JSON request's CPU in bench/.
    """

    TICK = 0.1  # deadlines are kept to within this

    __slots__ = ("_task", "_first_end", "_idle", "_hard", "_hard_is_total", "_since", "_watchdog", "_time",
                 "_held", "fired", "headers", "first")

    def __init__(self, timeout: Timeout, provider_end: float, request_end: float) -> None:
        loop = asyncio.get_running_loop()
        self._time = loop.time
        self._task = asyncio.current_task()
        now = self._time()
        self._first_end = now + timeout.first_byte
        self._idle = timeout.idle
        self._hard = min(provider_end, request_end)
        self._hard_is_total = provider_end <= request_end
        self._since: float | None = now  # when the current wait on the upstream began (None: not waiting)
        self.fired: UpstreamTimeout | None = None  # set when the watchdog cancelled the attempt
        self.headers = False  # the response headers are in
        self.first = False  # the first data event (or a JSON answer's headers) is in
        self._watchdog = _Watchdog.watch(loop, self)

    def waiting(self) -> None:
        """About to wait on the upstream: idle counts from now."""
        self._since = self._time()

    def sending(self) -> None:
        """About to write to the client."""
        self._since = None

    def stop(self) -> None:
        self._watchdog.clocks.discard(self)

    def hold(self) -> float:
        """Not yet the upstream's time (a wait for one of the provider's pooled connections): no
        deadline fires until :meth:`resume`. Returns the seconds left before the hard deadline."""
        self.stop()
        self._held = now = self._time()
        return self._hard - now

    def resume(self) -> None:
        """The upstream's time again: first_byte counts from now, the hard deadlines stay."""
        now = self._time()
        self._first_end += now - self._held
        self._watchdog = _Watchdog.watch(asyncio.get_running_loop(), self)

    def check(self, now: float) -> None:
        if now >= self._hard:
            what = "its total time on this provider" if self._hard_is_total else "the request's deadline"
        elif not self.first and now >= self._first_end:
            what = "its first_byte timeout before answering"
        elif self.headers and self._since is not None and now >= self._since + self._idle:
            what = f"its idle timeout ({self._idle:g} s without a byte)"
        else:
            return
        self.stop()
        self.fired = UpstreamTimeout(f"ran past {what}")
        if self._task is not None:
            self._task.cancel()


class _Watchdog:
    """One per event loop, ticking only while attempts run."""

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clocks: set[Clock] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def watch(cls, loop: asyncio.AbstractEventLoop, clock: Clock) -> _Watchdog:
        watchdog = cls._per_loop.get(loop)
        if watchdog is None:
            watchdog = cls._per_loop[loop] = cls(loop)
        watchdog.clocks.add(clock)
        if watchdog._task is None:
            watchdog._task = loop.create_task(watchdog._run())
        return watchdog

    async def _run(self) -> None:
        try:
            while self.clocks:
                await asyncio.sleep(Clock.TICK)
                now = self.loop.time()
                for clock in list(self.clocks):
                    clock.check(now)
        finally:
            self._task = None
