"""One JSON line per request on stdout: who asked for what, where it went, how it ended.

Never a key, and never a message body unless ``GATEWAY_LOG_BODIES=true``.
"""

from __future__ import annotations

import logging
import sys

import orjson

from .exchange import Exchange

logger = logging.getLogger("gateway.access")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class AccessLog:
    def __init__(self, *, log_bodies: bool = False) -> None:
        self.log_bodies = log_bodies

    def request(self, exchange: Exchange) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        usage = exchange.usage or {}
        line = {
            "event": "request", "request_id": exchange.request_id, "model": exchange.alias,
            "provider": exchange.provider, "upstream_model": exchange.upstream_model, "stream": exchange.stream,
            "status": exchange.status, "error": exchange.error_code, "attempts": exchange.attempts,
            "latency_ms": _ms(exchange.since_start()), "ttfb_ms": _ms(exchange.ttfb),
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
        }
        if exchange.dropped:
            line["dropped"] = exchange.dropped
        logger.info(orjson.dumps(line).decode())


def configure(level: str) -> None:
    """JSON lines as they are, one per record, on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
