"""Provider ejections shared by every replica (issue 14): a provider one replica ejected is
skipped by all, for what is left of its cool-down.

An ejection here is written to the shared state at once; every ``POLL`` seconds each replica
reads the others' and adopts those it does not have. A shared state that does not answer only
delays this: each replica still ejects on its own evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from .health import Health
from .state import SharedStateDown


class SharedEjections(Protocol):
    async def eject(self, provider: str, seconds: float) -> None: ...

    async def ejections(self) -> dict[str, float]:
        """Provider -> seconds its ejection has left, for those ejected now."""
        ...


class SharedHealth:
    POLL = 1.0

    def __init__(self, health: Health, shared: SharedEjections) -> None:
        self._health, self._shared = health, shared
        self._writes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    def ejected_here(self, provider: str, seconds: float) -> None:
        write = asyncio.get_running_loop().create_task(self._write(provider, seconds))
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def _write(self, provider: str, seconds: float) -> None:
        with contextlib.suppress(SharedStateDown):  # the others eject it on their own evidence
            await self._shared.eject(provider, seconds)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        for task in [*self._writes, *([self._task] if self._task else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.POLL)
            with contextlib.suppress(SharedStateDown):
                for provider, seconds in (await self._shared.ejections()).items():
                    self._health.adopt(provider, seconds)
