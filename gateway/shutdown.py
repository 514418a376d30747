"""Graceful shutdown's first step (issue 10): on SIGTERM, readiness turns false at once while
requests are still served for ``GATEWAY_SHUTDOWN_DELAY`` seconds (a load balancer's probe period:
it stops sending before the listener closes), then the server's own shutdown runs: the listener
closes and requests in flight finish within ``GATEWAY_SHUTDOWN_GRACE``.

The server's SIGTERM handler (uvicorn's) is kept and called when the delay is over; a second
SIGTERM calls it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any


class Drain:
    def __init__(self, delay: float, started: Callable[[], None]) -> None:
        self.delay = delay
        self.draining = False
        self._started = started  # told once, when the drain begins
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server_handler: Callable[[int, Any], Any] | None = None

    def install(self) -> None:
        """Take SIGTERM over from the server; a no-op off the main thread (tests) or with no handler."""
        handler = signal.getsignal(signal.SIGTERM)
        if not callable(handler):
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self._terminated)
            self._loop, self._server_handler = loop, handler

    def _terminated(self) -> None:
        assert self._loop is not None
        if self.draining:  # asked twice: no more waiting
            self._hand_over()
            return
        self.draining = True
        self._started()
        self._loop.call_later(self.delay, self._hand_over)

    def _hand_over(self) -> None:
        handler, self._server_handler = self._server_handler, None
        if handler is None or self._loop is None:
            return
        with contextlib.suppress(ValueError, RuntimeError):
            self._loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, handler)
        handler(signal.SIGTERM, None)

    def uninstall(self) -> None:
        if self._loop is not None and self._server_handler is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.remove_signal_handler(signal.SIGTERM)
                signal.signal(signal.SIGTERM, self._server_handler)
