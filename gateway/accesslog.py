"""JSON lines on stdout: one per request and one per upstream attempt, plus operational events.

Who asked for what, where it went, how it ended. Never a key (``key`` is its configured name), nor a message body
(``GATEWAY_LOG_BODIES=true`` adds the body the upstream was sent, for debugging).

Written straight to stdout's file descriptor through a buffer of our own rather than through
``logging``: a LogRecord per line cost about a tenth of a request's CPU under load (bench/). Lines
are flushed within 200 ms, at exit, and at once when stdout is a terminal or the line is not a
request's.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import os
import sys
from typing import Any

import orjson

from .errors import bounded
from .exchange import Exchange

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_LINE = orjson.OPT_APPEND_NEWLINE


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class AccessLog:
    def __init__(self, level: str = "info") -> None:
        self.level = LEVELS.get(level.lower(), 20)
        self._flush_pending = False
        # Our own 64 KiB buffer on stdout's descriptor: sys.stdout.buffer is unbuffered under
        # PYTHONUNBUFFERED (common in containers), a system call per line on the request path.
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        self._out = io.BufferedWriter(io.FileIO(fd, "wb", closefd=False), buffer_size=1 << 16)
        self._tty = os.isatty(fd)
        atexit.register(self.flush)

    def _write(self, record: dict[str, Any], urgent: bool) -> None:
        self._out.write(orjson.dumps(record, option=_LINE))
        if urgent or self._tty:
            self._out.flush()
        elif not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_later(0.2, self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        with contextlib.suppress(OSError, ValueError):
            self._out.flush()

    def event(self, name: str, *, level: str = "info", **fields: Any) -> None:
        if LEVELS[level] >= self.level:
            self._write({"event": name, "level": level, **fields}, urgent=True)

    def request(self, exchange: Exchange) -> None:
        if self.level > LEVELS["info"]:
            return
        for number, attempt in enumerate(exchange.attempts, start=1):
            self._write({"event": "attempt", "request_id": exchange.request_id, "attempt": number,
                         "provider": attempt.provider, "outcome": attempt.outcome, "retry": attempt.retry,
                         "headers_ms": _ms(attempt.headers)}, urgent=False)
        usage = exchange.usage or {}
        line: dict[str, Any] = {
            "event": "request", "request_id": exchange.request_id, "frontdoor": exchange.frontdoor,
            "model": exchange.alias and bounded(exchange.alias),
            "provider": exchange.provider, "upstream_model": exchange.upstream_model, "stream": exchange.stream,
            "status": exchange.status, "error": exchange.error_code, "attempts": len(exchange.attempts),
            "latency_ms": _ms(exchange.latency()), "ttfb_ms": _ms(exchange.ttfb),
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
            "key": exchange.key or None, "cost_usd": round(exchange.cost_usd, 8),
        }
        if exchange.dropped:
            line["dropped"] = exchange.dropped
        if exchange.rejections:
            line["skipped"] = [f"{p}:{param}" for p, param in exchange.rejections]
        if exchange.body is not None:
            line["body"] = exchange.body.decode("utf-8", "replace")
        self._write(line, urgent=False)
