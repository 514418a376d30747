"""What happened to one request, as the relay saw it: read by the access log and the metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Exchange:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    alias: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    status: int = 0  # set when the response starts
    attempts: int = 0
    error_code: str | None = None
    ttfb: float | None = None  # seconds from start to the upstream's first byte
    first_reasoning: float | None = None  # seconds from start to the first reasoning_content delta
    first_content: float | None = None  # seconds from start to the first content delta
    usage: dict[str, Any] | None = None
    dropped: list[str] = field(default_factory=list)
    attempt_log: list[tuple[str, str]] = field(default_factory=list)  # (provider, "ok" or error code)
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (provider, param) of skipped routes
    body: bytes | None = None  # what the upstream was sent, kept only with GATEWAY_LOG_BODIES=true
    ended: float | None = None  # when the client had its last byte, if the gateway had more to do

    @property
    def responded(self) -> bool:
        return self.status != 0

    def since_start(self) -> float:
        return time.perf_counter() - self.started

    def latency(self) -> float:
        """Seconds from the request's start to the client's last byte."""
        return (self.ended or time.perf_counter()) - self.started
