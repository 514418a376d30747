"""What happened to one request, as the relay saw it: read by the access log and the metrics.

Times are ``time.perf_counter()`` readings; durations are derived from them where they are read.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

#: upper bounds (seconds) of the inter-token histogram's buckets: gaps are binned as they come, so a
#: stream of any length holds a few counters, not a list of every gap
GAP_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(slots=True)
class Attempt:
    """One try of one route: timed from its own start, so a fallback never charges one provider's
    wait to another (issue 9, point 4)."""

    provider: str
    started: float = field(default_factory=time.perf_counter)
    outcome: str = ""  # "ok", or the code of the error that ended it; "" while it runs
    headers: float | None = None  # seconds from the attempt's start to the upstream's response headers
    retry: bool = False  # a second (or later) try of the same route


@dataclass(slots=True)
class Exchange:
    request_id: str
    frontdoor: str = "chat"  # the API the client spoke (gateway.doors)
    key: str = ""  # the client key's configured name (gateway.keys); "": refused before one was known
    started: float = field(default_factory=time.perf_counter)
    alias: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    status: int = 0  # set when the response starts
    error_code: str | None = None
    received: float | None = None  # when the client's body was in hand
    first_reasoning: float | None = None  # seconds from start to the first reasoning_content delta
    first_content: float | None = None  # seconds from start to the first content delta
    last_delta: float | None = None  # when the latest delta arrived
    gap_counts: list[int] | None = None  # per GAP_BOUNDS bucket (+Inf last): gaps between stream deltas
    gap_sum: float = 0.0
    usage: dict[str, Any] | None = None
    dropped: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (provider, param) of skipped routes
    body: bytes | None = None  # what the upstream was sent, kept only with GATEWAY_LOG_BODIES=true
    upstream_done: float | None = None  # when the upstream's last byte of the answer was read
    ended: float | None = None  # when the client had its last byte: from then on nothing is a 499
    cost_usd: float = 0.0  # the usage at the answering route's price (gateway.prices)
    unpriced: bool = False  # there was usage, and no price for the route that answered
    refused: str | None = None  # why the key was refused (errors.KeyRefusal.reason)

    @property
    def responded(self) -> bool:
        return self.status != 0

    @property
    def code(self) -> str:
        """The request's outcome as a bounded word: ``ok`` or the gateway's error code."""
        return self.error_code or "ok"

    @property
    def ttfb(self) -> float | None:
        """The answering (last) attempt's time to response headers."""
        return self.attempts[-1].headers if self.attempts else None

    def since_start(self) -> float:
        return time.perf_counter() - self.started

    def deltas_arrived(self, count: int) -> None:
        """``count`` reasoning, content or tool-call deltas arrived in one read: one gap since the
        delta before, and ``count - 1`` gaps of 0 (they came together). Timed once per read, not
        once per delta: a clock read and a bisect per event were 3% of a stream's CPU in bench/."""
        now = time.perf_counter()
        if self.last_delta is not None:
            self.gap(now - self.last_delta)
        if count > 1:
            self.gap(0.0, count - 1)
        self.last_delta = now

    def gap(self, seconds: float, times: int = 1) -> None:
        if self.gap_counts is None:
            self.gap_counts = [0] * (len(GAP_BOUNDS) + 1)
        self.gap_counts[bisect.bisect_left(GAP_BOUNDS, seconds)] += times
        self.gap_sum += seconds * times

    def latency(self) -> float:
        """Seconds from the request's start to the client's last byte."""
        return (self.ended or time.perf_counter()) - self.started
