"""Provider ejections shared by every replica (issue 14): a provider one replica ejected is
skipped by all, for what is left of its cool-down.

An ejection here is written to the shared state at once; every ``POLL`` seconds each replica
reads the others' and adopts those it does not have. A shared state that does not answer only
delays this: each replica still ejects on its own evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, Protocol

from .background import Background, quietly
from .health import Health
from .state import SharedStateDown


class SharedEjections(Protocol):
    async def eject(self, provider: str, seconds: float) -> None: ...

    async def ejections(self) -> dict[str, float]:
        """Provider -> seconds its ejection has left, for those ejected now."""
        ...

    async def restore(self, provider: str) -> None: ...


class SharedHealth:
    POLL = 1.0

    def __init__(self, health: Health, shared: SharedEjections) -> None:
        self._health, self._shared = health, shared
        self._writes = Background()
        self._task: asyncio.Task[None] | None = None

    def ejected_here(self, provider: str, seconds: float) -> None:
        self._write(self._shared.eject(provider, seconds))

    def recovered_here(self, provider: str) -> None:
        """A try here found an ejected provider answering: back for all (else the next poll would
        eject it here again for the rest of its cool-down)."""
        self._write(self._shared.restore(provider))

    def _write(self, change: Coroutine[Any, Any, None]) -> None:
        self._writes.run(quietly(change, SharedStateDown))  # failed: the others go on their own evidence

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        await self._writes.wait()  # told before the process goes (each bounded by the store's timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.POLL)
            with contextlib.suppress(SharedStateDown):
                for provider, seconds in (await self._shared.ejections()).items():
                    self._health.adopt(provider, seconds)
