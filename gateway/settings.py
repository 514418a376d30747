"""Process settings, from GATEWAY_* environment variables (pydantic-settings)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .state.resp import Address

#: set by the CLI for worker processes under its supervisor (``--workers N``): a reload there is a
#: SIGHUP to the supervisor, which replaces every worker one by one
SUPERVISED = "GATEWAY_SUPERVISED"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    config: str = "config/gateway.yaml"
    host: str = "127.0.0.1"
    port: int = 8000
    #: comma-separated keys clients send as ``Authorization: Bearer``
    api_keys: str = ""
    #: the key for /admin/*; none: the admin endpoints are off
    admin_key: str = ""
    max_body_bytes: int = 10 * 1024 * 1024
    #: one upstream SSE event larger than this ends the stream with an error (issue 4, point 9)
    max_event_bytes: int = 1024 * 1024
    #: a JSON answer larger than this is cut while read, a failed attempt (502 upstream_too_large):
    #: an upstream must not take the gateway's memory. 32 MiB is tens of times the largest answer a
    #: model gives (128k output tokens, reasoning included, are a few MB of JSON), yet a few dozen
    #: such answers in flight still fit a container's memory
    max_upstream_bytes: int = 32 * 1024 * 1024
    metrics_port: int | None = None
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_bodies: bool = False
    #: on SIGTERM (or a reload under --workers), how long requests in flight may still run: streams
    #: from thinking models last minutes; past it a stream ends with an error event
    shutdown_grace: float = 300.0
    #: on SIGTERM, /readyz answers 503 at once while requests are still served this many seconds
    #: (a load balancer's probe period), then the listener closes and the grace begins
    shutdown_delay: float = 0.0
    #: outlier ejection (issue 10): this many failed attempts in a row eject a provider for eject_seconds
    eject_after: int = 5
    eject_seconds: float = 30.0
    #: ... or at least eject_rate of its last eject_window attempts failed (a rate above 1: never)
    eject_window: int = 20
    eject_rate: float = 0.5
    #: seconds one request may spend over all its routes, retries and backoff included (issue 10)
    request_deadline: float = 900.0
    #: seconds a stored Response (/v1/responses, ``store``) is kept for ``previous_response_id`` (issue 13)
    responses_ttl: float = 3600.0

    # --- Keys and shared state (issue 14) ---
    #: redis://[user:password@]host:port/db: limits, budgets, concurrency leases, provider ejections
    #: and stored responses shared by every worker and replica; none: each process keeps its own
    redis_url: str = ""
    #: Redis unreachable or slower than redis_timeout: serve on this process's counts (open) or 503 (closed)
    redis_fail: Literal["open", "closed"] = "open"
    redis_timeout: PositiveFloat = 0.05
    #: seconds a concurrency slot outlives the last sign of its replica (it is refreshed while the request runs)
    lease_ttl: PositiveFloat = 15.0
    #: tokens a request without max_tokens is admitted on, against a key's token limits and budget
    token_estimate: PositiveInt = 1024

    # --- Hardening: client connections (issue 11; enforced by gateway/connections.py) ---
    #: seconds a new connection may stay silent before the first byte of its first request
    client_idle_timeout: PositiveFloat = 10.0
    #: seconds from a request's first byte to the end of its headers (else 408)
    client_header_timeout: PositiveFloat = 10.0
    #: seconds a request body may go without a byte (else 408) ...
    client_body_timeout: PositiveFloat = 30.0
    #: ... and seconds the whole body may take from the end of the headers (a drip)
    client_body_deadline: PositiveFloat = 120.0
    #: seconds a client may leave the gateway unable to write to it (it stopped reading)
    client_write_timeout: PositiveFloat = 60.0
    #: seconds an idle keep-alive connection is kept after its last response
    keepalive_timeout: PositiveFloat = 5.0
    #: open client connections per process; 0: from the file-descriptor limit (RLIMIT_NOFILE soft),
    #: less room for upstream connections
    max_connections: NonNegativeInt = 0
    #: the request line and headers together (else 431)
    max_header_bytes: PositiveInt = 32 * 1024
    max_headers: PositiveInt = 100
    # --- end of hardening: client connections ---

    @field_validator("redis_url")
    @classmethod
    def _redis_address(cls, value: str) -> str:
        if value:
            Address.parse(value)  # a ValueError names what is wrong, never the password
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def client_keys(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
