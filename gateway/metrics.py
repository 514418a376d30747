"""Prometheus families (prefix ``gateway_``), fed from each finished :class:`Exchange`.

Labels stay bounded: ``model`` is a configured alias (anything else is ``unknown``), ``provider``
a configured provider, ``param`` a field path with its indices folded (``messages[].content``).
With ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, and the
values live in files every worker writes and ``/metrics`` sums.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401  (re-exported)
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from .exchange import Exchange

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_INDEX = re.compile(r"\[\d+\]")

REQUESTS = Counter("gateway_requests", "Chat completion requests by outcome", ["model", "provider", "status"])
DURATION = Histogram("gateway_request_duration_seconds", "Whole request, to the last byte sent",
                     ["model", "provider"], buckets=_SECONDS)
TTFB = Histogram("gateway_upstream_ttfb_seconds", "Time to the upstream's first body byte", ["provider"],
                 buckets=_SECONDS)
TTFT = Histogram("gateway_time_to_first_token_seconds", "Streams: time to the first reasoning / content delta",
                 ["model", "provider", "kind"], buckets=_SECONDS)
TOKENS = Counter("gateway_tokens", "Tokens by kind, from upstream usage", ["model", "provider", "kind"])
INFLIGHT = Gauge("gateway_inflight_requests", "Chat completions in progress", multiprocess_mode="livesum")
ATTEMPTS = Counter("gateway_upstream_attempts", "Upstream attempts by outcome", ["provider", "outcome"])
REJECTIONS = Counter("gateway_rejections", "Routes skipped for a documented limit", ["provider", "param"])
PROVIDER_UP = Gauge("gateway_provider_up", "1 when the provider's last attempt did not fail (0: failing or "
                    "disabled)", ["provider"], multiprocess_mode="mostrecent")


class _Children:
    """``metric.labels(*values)``, remembered: the label sets are few (configured names only), and
    prometheus_client's own lookup checks and converts every value on every call."""

    __slots__ = ("_metric", "_seen")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._seen: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._seen.get(values)
        if child is None:
            child = self._seen[values] = self._metric.labels(*values)
        return child


def _detail(usage: dict[str, Any], group: str, name: str) -> Any:
    details = usage.get(group)
    return details.get(name) if isinstance(details, dict) else None


def _tokens(usage: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """Counts by kind from an upstream's usage object, whatever else it holds."""
    yield "prompt", usage.get("prompt_tokens")
    yield "completion", usage.get("completion_tokens")
    yield "reasoning", _detail(usage, "completion_tokens_details", "reasoning_tokens")
    yield "cached", _detail(usage, "prompt_tokens_details", "cached_tokens")


class Metrics:
    """Records exchanges; knows the configured names so that no label comes from a client."""

    def __init__(self) -> None:
        self.aliases: frozenset[str] = frozenset()
        self._known_up: set[str] = set()
        self.requests, self.duration, self.ttfb = _Children(REQUESTS), _Children(DURATION), _Children(TTFB)
        self.ttft, self.tokens, self.attempts = _Children(TTFT), _Children(TOKENS), _Children(ATTEMPTS)
        self.rejections, self.provider_up = _Children(REJECTIONS), _Children(PROVIDER_UP)

    def configure(self, aliases: Iterable[str], providers: dict[str, bool]) -> None:
        """The names in force (called at start and on reload); ``providers``: name -> enabled."""
        self.aliases = frozenset(aliases)
        for name, enabled in providers.items():
            if not enabled:
                self.provider_up(name).set(0)
            elif name not in self._known_up:  # a reload keeps what the last attempts said
                self.provider_up(name).set(1)
        self._known_up = {name for name, enabled in providers.items() if enabled}

    def started(self) -> None:
        INFLIGHT.inc()

    def finished(self, exchange: Exchange) -> None:
        INFLIGHT.dec()
        model = exchange.alias if exchange.alias in self.aliases else "unknown"
        provider = exchange.provider or "none"
        self.requests(model, provider, str(exchange.status)).inc()
        self.duration(model, provider).observe(exchange.latency())
        for name, outcome in exchange.attempt_log:
            self.attempts(name, outcome).inc()
            if outcome in ("ok", "upstream_rejected", "content_filter"):
                self.provider_up(name).set(1)
            elif outcome in ("upstream_error", "upstream_timeout"):
                self.provider_up(name).set(0)
        for name, param in exchange.rejections:
            self.rejections(name, _INDEX.sub("[]", param)).inc()
        if exchange.ttfb is not None and exchange.provider:
            self.ttfb(provider).observe(exchange.ttfb)
        if exchange.first_reasoning is not None:
            self.ttft(model, provider, "reasoning").observe(exchange.first_reasoning)
        if exchange.first_content is not None:
            self.ttft(model, provider, "content").observe(exchange.first_content)
        if exchange.usage:
            for kind, count in _tokens(exchange.usage):
                if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                    self.tokens(model, provider, kind).inc(count)


def _registry() -> CollectorRegistry | None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def serve_separately(port: int, host: str) -> None:
    """``/metrics`` on a port of its own (``GATEWAY_METRICS_PORT``), from the serving process."""
    start_http_server(port, addr=host, registry=_registry() or REGISTRY)


def exposition() -> bytes:
    """The text format for ``/metrics``: this process's registry, or every worker's files."""
    return generate_latest(_registry() or REGISTRY)
