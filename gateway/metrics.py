"""Prometheus families (prefix ``gateway_``), fed from each finished :class:`Exchange`.

Labels stay bounded: ``model`` is a configured alias (anything else is ``unknown``), ``provider``
a configured provider (``none``: no route was tried), ``code`` and ``outcome`` the gateway's own
error codes (:data:`gateway.errors.CODES`), ``param`` a field path with its indices folded
(``messages[].content``). With ``--workers N`` the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any
worker starts, and the values live in files every worker writes and ``/metrics`` sums.

Every label set a dashboard needs from the first event is created at 0 when a config is loaded:
``rate()`` and ``increase()`` see nothing of a series until its second sample (issue 9, point 5).
"""

from __future__ import annotations

import bisect
import os
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
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
    values,
)

from . import __version__
from .connections import REASONS as CLIENT_REFUSAL_REASONS
from .doors import DOORS
from .errors import CLIENT_CLOSED, CODES, SHUTDOWN, UPSTREAM_CODES
from .exchange import GAP_BOUNDS, Exchange
from .prices import count
from .processes import WorkerProcesses

# Streams run for minutes (the idle timeout bounds a silence, not the total): up to 30 minutes,
# with fine steps where thinking answers land (10-120 s).
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300,
            600, 900, 1200, 1800)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
_INDEX = re.compile(r"\[\d+\]")
TOKEN_KINDS = ("prompt", "completion", "reasoning", "cached")
FRONTDOORS = tuple(door.name for door in DOORS.values())
#: what an attempt can end as: "ok" or the code of the error that ended it
OUTCOMES = ("ok", *UPSTREAM_CODES, CLIENT_CLOSED, SHUTDOWN, "internal_error")

REQUESTS = Counter("gateway_requests", "Requests by HTTP status and outcome code (ok, or the gateway's error code), "
                   "and the front door (API) the client spoke", ["model", "provider", "status", "code", "frontdoor"])
DURATION = Histogram("gateway_request_duration_seconds", "Whole request, from its first byte to the last byte "
                     "sent to the client", ["model", "provider", "stream"], buckets=_LATENCY)
TTFB = Histogram("gateway_upstream_ttfb_seconds", "Per attempt: from sending the request upstream to the "
                 "upstream's response headers (every attempt that got headers, errors included)", ["provider"],
                 buckets=_LATENCY)
TTFT = Histogram("gateway_time_to_first_token_seconds", "Streams: from the request's start to the first reasoning "
                 "/ content delta", ["model", "provider", "kind"], buckets=_LATENCY)
GAPS = Histogram("gateway_inter_token_seconds", "Streams: each gap between two consecutive non-empty deltas "
                 "(reasoning, content, tool call); deltas of one network read are 0 apart", ["model", "provider"],
                 buckets=GAP_BOUNDS)
OVERHEAD = Histogram("gateway_overhead_seconds", "The gateway's own time: phase=request from the client's body in "
                     "hand to the upstream call, phase=response from the upstream's last byte to the client's",
                     ["phase"], buckets=_OVERHEAD)
TOKENS = Counter("gateway_tokens", "Tokens by kind, from upstream usage", ["model", "provider", "kind"])
INFLIGHT = Gauge("gateway_inflight_requests", "Chat completions in progress", multiprocess_mode="livesum")
ATTEMPTS = Counter("gateway_upstream_attempts", "Upstream attempts by outcome (ok, or the error code that ended "
                   "the attempt)", ["provider", "outcome"])
REJECTIONS = Counter("gateway_rejections", "Routes skipped for a documented limit", ["provider", "param"])
PROVIDER_UP = Gauge("gateway_provider_up", "1 when the provider is enabled and not ejected for failing (with "
                    "workers: in every worker)", ["provider"], multiprocess_mode="livemin")
BUILD = Gauge("gateway_build_info", "The running build: always 1", ["version", "python"], multiprocess_mode="max")
RELOADS = Counter("gateway_config_reloads", "Config reloads by result (success, failure)", ["result"])
LOADED = Gauge("gateway_config_loaded_timestamp_seconds", "When the config in force was loaded (Unix time)",
               multiprocess_mode="max")
# --- Keys (issue 14): the key label is a configured name, env (GATEWAY_API_KEYS) or none (no keys) ---
KEY_REQUESTS = Counter("gateway_key_requests", "Requests by virtual key, model and HTTP status",
                       ["key", "model", "status"])
COST = Counter("gateway_cost_usd", "USD spent: each answer's usage at the price of the route that answered "
               "(prices:)", ["key", "model", "provider"])
KEY_REJECTIONS = Counter("gateway_key_rejections", "Requests refused by their key's models, limits or budget, "
                         "by reason (model, requests, tokens, concurrency, budget)", ["key", "reason"])
UNPRICED = Counter("gateway_unpriced_requests", "Answers with usage and no price for the route that answered "
                   "(counted at 0 USD)", ["model", "provider"])
SHARED_STATE_UP = Gauge("gateway_shared_state_up", "1 when the shared state (Redis) answers or none is "
                        "configured; 0 while it does not (the gateway counts on its own, or refuses)",
                        multiprocess_mode="livemin")
KEY_REFUSAL_REASONS = ("model", "requests", "tokens", "concurrency", "budget")
# --- Hardening: client connections (issue 11) ---
CLIENT_REFUSED = Counter("gateway_client_refused", "Client connections refused or cut by the connection guard "
                         "(gateway/connections.py), by reason", ["reason"])
# --- end of hardening: client connections ---


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

    def forget(self, *values: str) -> None:
        if self._seen.pop(values, None) is not None:
            self._metric.remove(*values)


def _tokens(usage: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """Counts by kind from an upstream's usage object, whatever else it holds (0: none said)."""
    return (("prompt", count(usage, "prompt_tokens")), ("completion", count(usage, "completion_tokens")),
            ("reasoning", count(usage, "completion_tokens_details", "reasoning_tokens")),
            ("cached", count(usage, "prompt_tokens_details", "cached_tokens")))


#: the request outcomes worth a series from the start: before any provider, and on a provider
_BEFORE_ANY_PROVIDER = ("invalid_request", "unsupported_by_provider", "provider_disabled", "internal_error",
                        "model_not_allowed", "rate_limit_exceeded", "budget_exceeded", "shared_state_unavailable")
_UNKNOWN_MODEL = ("model_not_found", "invalid_request", "invalid_api_key", "payload_too_large", CLIENT_CLOSED,
                  "request_timeout")
_ON_A_PROVIDER = ("ok", *UPSTREAM_CODES, CLIENT_CLOSED, SHUTDOWN, "internal_error")
_MID_STREAM = ("upstream_error", "upstream_timeout", SHUTDOWN, "internal_error")  # 200 sent, then it failed


class Metrics:
    """Records exchanges; knows the configured names so that no label comes from a client."""

    def __init__(self) -> None:
        self.aliases: frozenset[str] = frozenset()
        self._enabled: Mapping[str, bool] = {}
        self.requests, self.duration, self.ttfb = _Children(REQUESTS), _Children(DURATION), _Children(TTFB)
        self.ttft, self.gaps, self.tokens = _Children(TTFT), _Children(GAPS), _Children(TOKENS)
        self.attempts, self.rejections = _Children(ATTEMPTS), _Children(REJECTIONS)
        self.provider_up, self.overhead = _Children(PROVIDER_UP), _Children(OVERHEAD)
        self.client_refusals = _Children(CLIENT_REFUSED)
        self.key_requests, self.cost = _Children(KEY_REQUESTS), _Children(COST)
        self.key_rejections, self.unpriced = _Children(KEY_REJECTIONS), _Children(UNPRICED)
        BUILD.labels(__version__, platform.python_version()).set(1)
        for result in ("success", "failure"):
            RELOADS.labels(result)

    def configure(self, routes: Mapping[str, Sequence[str]], providers: Mapping[str, bool],
                  ejected: Iterable[str] = (), keys: Iterable[str] = ()) -> None:
        """The names in force (at start and on reload): alias -> its providers, provider -> enabled."""
        self.aliases = frozenset(routes)
        for gone in set(self._enabled) - set(providers):  # no stale "up" for a provider no longer configured
            self.provider_up.forget(gone)
        self._enabled = dict(providers)
        LOADED.set_to_current_time()
        down = set(ejected)
        for name, enabled in providers.items():
            self.provider_up(name).set(1 if enabled and name not in down else 0)
            self.ttfb(name)
            for outcome in OUTCOMES:
                self.attempts(name, outcome)
        for phase in ("request", "response"):
            self.overhead(phase)
        for reason in CLIENT_REFUSAL_REASONS:  # hardening: client connections
            self.client_refusals(reason)
        for key in keys:
            for reason in KEY_REFUSAL_REASONS:
                self.key_rejections(key, reason)
        for door in FRONTDOORS:
            for code in _UNKNOWN_MODEL:
                self.requests("unknown", "none", str(CODES[code]), code, door)
        self.duration("unknown", "none", "false")
        for alias, names in routes.items():
            for door in FRONTDOORS:
                for code in _BEFORE_ANY_PROVIDER:
                    self.requests(alias, "none", str(CODES[code]), code, door)
                for name in names:
                    for code in _ON_A_PROVIDER:
                        self.requests(alias, name, "200" if code == "ok" else str(CODES[code]), code, door)
                    for code in _MID_STREAM:
                        self.requests(alias, name, "200", code, door)
            for stream in ("true", "false"):
                self.duration(alias, "none", stream)
            for name in names:
                for stream in ("true", "false"):
                    self.duration(alias, name, stream)
                for kind in ("reasoning", "content"):
                    self.ttft(alias, name, kind)
                for kind in TOKEN_KINDS:
                    self.tokens(alias, name, kind)
                self.gaps(alias, name)

    def health_changed(self, provider: str, up: bool) -> None:
        """The one rule: up exactly when enabled and not ejected."""
        self.provider_up(provider).set(1 if up and self._enabled.get(provider, False) else 0)

    def client_refused(self, reason: str) -> None:
        self.client_refusals(reason).inc()

    @staticmethod
    def reloaded(ok: bool) -> None:
        RELOADS.labels("success" if ok else "failure").inc()

    @staticmethod
    def shared_state(up: bool) -> None:
        SHARED_STATE_UP.set(1 if up else 0)

    def started(self) -> None:
        _add(INFLIGHT, 1)

    def finished(self, exchange: Exchange) -> None:
        _add(INFLIGHT, -1)
        self.record(exchange)

    def record(self, exchange: Exchange, timed: bool = True) -> None:
        """Counts one request (``finished`` for those that were in flight; a refused key never was,
        nor was it timed)."""
        model = exchange.alias if exchange.alias in self.aliases else "unknown"
        provider = exchange.provider or "none"
        code = exchange.code
        if code != "ok" and code not in CODES:
            code = "internal_error"
        status = str(exchange.status)
        _add(self.requests(model, provider, status, code, exchange.frontdoor), 1)
        if timed:
            _observe(self.duration(model, provider, "true" if exchange.stream else "false"), exchange.latency())
        for attempt in exchange.attempts:
            _add(self.attempts(attempt.provider, attempt.outcome), 1)
            if attempt.headers is not None:
                _observe(self.ttfb(attempt.provider), attempt.headers)
        for name, param in exchange.rejections:
            _add(self.rejections(name, _INDEX.sub("[]", param)), 1)
        if exchange.attempts and exchange.received is not None:
            _observe(self.overhead("request"), exchange.attempts[0].started - exchange.received)
        if exchange.upstream_done is not None and exchange.ended is not None:
            _observe(self.overhead("response"), exchange.ended - exchange.upstream_done)
        if exchange.first_reasoning is not None:
            _observe(self.ttft(model, provider, "reasoning"), exchange.first_reasoning)
        if exchange.first_content is not None:
            _observe(self.ttft(model, provider, "content"), exchange.first_content)
        if exchange.gap_counts is not None:
            add_counts(self.gaps(model, provider), exchange.gap_counts, exchange.gap_sum)
        if exchange.usage:
            for kind, tokens in _tokens(exchange.usage):
                if tokens:
                    _add(self.tokens(model, provider, kind), tokens)
        if exchange.key:  # a request that got past the key check
            self._keyed(exchange, model, provider, status)

    def _keyed(self, exchange: Exchange, model: str, provider: str, status: str) -> None:
        _add(self.key_requests(exchange.key, model, status), 1)
        if exchange.refused is not None:
            _add(self.key_rejections(exchange.key, exchange.refused), 1)
        if exchange.cost_usd:
            _add(self.cost(exchange.key, model, provider), exchange.cost_usd)
        if exchange.unpriced:
            _add(self.unpriced(model, provider), 1)


# The per-request writes go to prometheus_client's value objects directly (``_value``, ``_sum``,
# ``_buckets``, ``_upper_bounds``; tests/test_metrics.py checks them against the public methods):
# its public inc() and observe() re-check the metric on every call and scan a histogram's bounds in
# Python, 12 us of a JSON request's ~270 us of CPU in bench/, a third of that after. In one process
# a value is a float behind a lock (MutexValue) that only this thread writes (a scraper's thread
# reads it, and a float is swapped whole): it is added to without the lock, a third of its cost.
# With --workers, each value is in a file (MmapedValue) and its own inc() writes it there.

if values.ValueClass is values.MutexValue:
    def _inc(value: Any, amount: float) -> None:
        value._value += amount

    def _add(metric: Any, amount: float) -> None:
        """A counter's or gauge's ``inc(amount)`` (a gauge's ``dec`` with a negative amount)."""
        metric._value._value += amount

    def _observe(histogram: Any, amount: float) -> None:
        """``histogram.observe(amount)``: the first bucket whose bound is at least it (the last is +Inf)."""
        histogram._sum._value += amount
        histogram._buckets[bisect.bisect_left(histogram._upper_bounds, amount)]._value += 1
else:
    def _inc(value: Any, amount: float) -> None:
        value.inc(amount)

    def _add(metric: Any, amount: float) -> None:
        metric._value.inc(amount)

    def _observe(histogram: Any, amount: float) -> None:
        histogram._sum.inc(amount)
        histogram._buckets[bisect.bisect_left(histogram._upper_bounds, amount)].inc(1)


def add_counts(histogram: Any, counts: list[int], total: float) -> None:
    """Observations already binned by the histogram's own bounds (+Inf last), one increment per
    bucket: a stream's 50 gaps observed one by one cost a fifth of the streams/s in bench/ (each
    observe scans the buckets and takes two locks). prometheus_client's child layout (``_buckets``,
    ``_sum``) is read here; tests/test_metrics.py checks the result against plain observations."""
    _inc(histogram._sum, total)
    for bucket, times in zip(histogram._buckets, counts, strict=True):
        if times:
            _inc(bucket, times)


def _registry() -> CollectorRegistry | None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(WorkerProcesses())  # the default process collector sees only the answering worker
    return registry


def serve_separately(port: int, host: str) -> None:
    """``/metrics`` on a port of its own (``GATEWAY_METRICS_PORT``), from the serving process."""
    start_http_server(port, addr=host, registry=_registry() or REGISTRY)


def exposition() -> bytes:
    """The text format for ``/metrics``: this process's registry, or every worker's files."""
    return generate_latest(_registry() or REGISTRY)
