"""A virtual key's limits and budget (issue 14): admitted before anything is sent, settled once
the answer's usage is known.

The counting is the state store's (:mod:`gateway.state`): Redis when ``GATEWAY_REDIS_URL`` is set,
else this process. When Redis cannot be reached within its time budget, ``GATEWAY_REDIS_FAIL``
decides: ``open`` (the default) serves on this process's own counts, says so once a minute and in
``gateway_shared_state_up``; ``closed`` answers 503 ``shared_state_unavailable``. A probe brings
the shared counts back as soon as Redis answers again, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

from .background import Background
from .errors import BudgetExceeded, GatewayError, RateLimitExceeded, SharedStateUnavailable
from .keys import Key
from .state import Admission, SharedStateDown, State, Ticket, Window
from .state.memory import MemoryState

Headers = list[tuple[bytes, bytes]]
Admitting = Coroutine[Any, Any, tuple[Ticket, Headers]]
Told = Callable[[str, dict[str, Any]], None]  # (event, fields): a log line


class KeyLimits:
    def __init__(self, shared: State | None, *, fail: Literal["open", "closed"] = "open", lease_ttl: float = 15.0,
                 default_estimate: int = 1024, told: Told = lambda event, fields: None,
                 up: Callable[[bool], None] = lambda up: None) -> None:
        self.local = MemoryState(lease_ttl=lease_ttl)
        self._shared = shared
        self._fail = fail
        self._lease_ttl = lease_ttl
        self._default_estimate = default_estimate
        self._told, self._up = told, up
        self._down_since: float | None = None
        self._last_told = 0.0
        self._running: dict[str, Ticket] = {}  # lease -> ticket, for the refresher
        self._tasks: list[asyncio.Task[None]] = []
        self._settling = Background()
        up(True)

    @property
    def shared(self) -> bool:
        return self._shared is not None and self._down_since is None

    def estimate(self, body: dict[str, Any]) -> int:
        """Tokens a request is admitted on: its max_tokens, or the configured default."""
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return self._default_estimate

    def admit(self, key: Key, lease: str, estimate: int) -> Admitting:
        """The request's ticket and its ``x-ratelimit-*`` headers, or the 429 (or the 503 of a
        closed shared state) when it may not go. Asked at once: the caller goes on with its own
        work while Redis answers, and awaits the answer before anything is sent upstream; one it
        will not await goes to :meth:`release`."""
        asked = self._shared.admit(key, lease, estimate) if self.shared and self._shared is not None else None
        return self._admitted(asked, key, lease, estimate)

    async def _admitted(self, asked: Awaitable[Admission] | None, key: Key, lease: str,
                        estimate: int) -> tuple[Ticket, Headers]:
        admission = None
        if asked is not None:
            try:
                admission = await asked
            except SharedStateDown as exc:
                self._went_down(exc)
        if admission is None:
            if self._fail == "closed" and self._shared is not None:
                raise SharedStateUnavailable("the gateway's shared state (Redis) cannot be reached, and "
                                             "GATEWAY_REDIS_FAIL=closed: no request goes unlimited")
            admission = await self.local.admit(key, lease, estimate)
        headers = _headers(key, admission)
        if admission.ticket is None:
            raise _refusal(key, admission, headers)
        self._running[lease] = admission.ticket
        return admission.ticket, headers

    def release(self, admitting: Admitting) -> None:
        """An admission asked for a request that went no further (no route could take it): its
        answer awaited, and undone, so that a request never sent counts nothing."""
        self._settling.run(self._undo(admitting))

    async def _undo(self, admitting: Admitting) -> None:
        try:
            ticket, _ = await admitting
        except GatewayError:  # refused, or the shared state closed: nothing was counted
            return
        self._running.pop(ticket.lease, None)
        try:
            await ticket.store.undo(ticket)
        except SharedStateDown as exc:
            self._went_down(exc)

    def settle_soon(self, ticket: Ticket, tokens: int, cost: float) -> None:
        """``settle``, as a task of its own: the answer is out, and its settling must not hold the
        request (a keep-alive connection waits for its handler to return), yet what it frees (the
        lease, the estimate's excess) is freed within a Redis round trip."""
        self._settling.run(self.settle(ticket, tokens, cost))

    async def settle(self, ticket: Ticket, tokens: int, cost: float) -> None:
        self._running.pop(ticket.lease, None)

        def lost() -> None:  # its tokens and cost did not reach the shared count: said, not hidden
            self._told("shared_state_lost_usage", {"key": ticket.key.name, "tokens": tokens,
                                                   "cost_usd": round(cost, 6)})
        try:
            await ticket.store.settle(ticket, tokens, cost, lost)
        except SharedStateDown as exc:  # slow (it may be counted late) or gone: served on local counts now
            self._went_down(exc)

    def _went_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._up(False)
        if now - self._last_told >= 60:
            self._last_told = now
            self._told("shared_state_down", {"error": str(exc), "fail": self._fail})

    def start(self) -> None:
        """The background work: refreshing the leases of requests still running, and probing a
        shared state that went down."""
        self._tasks = [asyncio.get_running_loop().create_task(self._refresh_leases())]
        if self._shared is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._probe()))

    async def stop(self) -> None:
        await self._settling.wait()  # what requests used is counted before the process goes
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _refresh_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            by_store: dict[int, tuple[State, list[Ticket]]] = {}
            for ticket in self._running.values():
                if ticket.key.limits.max_concurrent is not None:
                    by_store.setdefault(id(ticket.store), (ticket.store, []))[1].append(ticket)
            for store, tickets in by_store.values():
                try:
                    await store.refresh(tickets)
                except SharedStateDown as exc:
                    self._went_down(exc)

    async def _probe(self) -> None:
        assert self._shared is not None
        while True:
            await asyncio.sleep(1.0)
            if self._down_since is not None and await self._shared.ping():
                self._told("shared_state_back", {"down_s": round(time.monotonic() - self._down_since, 1)})
                self._down_since = None
                self._up(True)


def _refusal(key: Key, admission: Admission, headers: Headers) -> GatewayError:
    retry_after = max(1, int(admission.retry_after + 0.999))
    error: GatewayError
    if admission.refused == "budget" and admission.budget is not None:
        budget = admission.budget
        resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(admission.budget_resets))
        cap = f"${budget.cap:g}" if budget.unit == "usd" else f"{budget.cap:g} tokens"
        held = " (the requests still running included)" if budget.unit == "tokens" else ""
        error = BudgetExceeded(f"key {key.name!r} has used its budget of {cap} per {budget.period}{held}; "
                               f"it resets at {resets}")
    else:
        what = {"requests": f"{key.limits.requests_per_minute} requests per minute",
                "tokens": f"{key.limits.tokens_per_minute} tokens per minute",
                "concurrency": f"{key.limits.max_concurrent} requests at once"}[admission.refused or "requests"]
        error = RateLimitExceeded(f"key {key.name!r} is over its limit of {what}; try again in {retry_after} s",
                                  reason=admission.refused or "requests")
    error.headers = {"retry-after": str(retry_after), **{k.decode(): v.decode() for k, v in headers}}
    return error


def _headers(key: Key, admission: Admission) -> Headers:
    """OpenAI's rate-limit headers, for what the key has limits on (a refusal by one says its
    remaining 0 and when it frees)."""
    headers: Headers = []
    limits = key.limits
    for kind, window, limit in (("requests", admission.requests, limits.requests_per_minute),
                                ("tokens", admission.tokens, limits.tokens_per_minute)):
        if window is None and admission.refused == kind and limit is not None:
            window = Window(limit, 0, admission.retry_after)
        if window is not None:
            headers += _trio(kind, window)
    return headers


_NAMES = {kind: tuple(f"x-ratelimit-{what}-{kind}".encode() for what in ("limit", "remaining", "reset"))
          for kind in ("requests", "tokens")}


def _trio(kind: str, window: Window) -> Headers:
    limit, remaining, reset = _NAMES[kind]
    return [(limit, b"%d" % window.limit), (remaining, b"%d" % window.remaining),
            (reset, duration(window.reset).encode())]


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: ``120ms``, ``7.5s``, ``1m30s``."""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"
