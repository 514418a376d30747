"""One JSON line per request, and one per upstream attempt, on stdout: who asked for what, where
it went, how it ended. Never a key, and never a message body (``GATEWAY_LOG_BODIES=true`` adds
the request body the upstream was sent, for debugging).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from .exchange import Exchange

logger = logging.getLogger("gateway.access")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class AccessLog:
    def event(self, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
        logger.log(level, orjson.dumps({"event": name, **fields}).decode())

    def request(self, exchange: Exchange) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        for number, (provider, outcome) in enumerate(exchange.attempt_log, start=1):
            logger.info(orjson.dumps({"event": "attempt", "request_id": exchange.request_id, "attempt": number,
                                      "provider": provider, "outcome": outcome}).decode())
        usage = exchange.usage or {}
        line: dict[str, Any] = {
            "event": "request", "request_id": exchange.request_id, "model": exchange.alias,
            "provider": exchange.provider, "upstream_model": exchange.upstream_model, "stream": exchange.stream,
            "status": exchange.status, "error": exchange.error_code, "attempts": exchange.attempts,
            "latency_ms": _ms(exchange.since_start()), "ttfb_ms": _ms(exchange.ttfb),
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
        }
        if exchange.dropped:
            line["dropped"] = exchange.dropped
        if exchange.rejections:
            line["skipped"] = [f"{p}:{param}" for p, param in exchange.rejections]
        if exchange.body is not None:
            line["body"] = exchange.body.decode("utf-8", "replace")
        logger.info(orjson.dumps(line).decode())


def configure(level: str) -> None:
    """JSON lines as they are, one per record, on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
