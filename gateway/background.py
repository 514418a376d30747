"""Work that goes on after its caller has moved on (a settlement once the answer is out, a write to
the shared state, an undo): each task is held until it ends, so that it is not collected half way,
and shutdown can wait for what is left."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class Background:
    def __init__(self, failed: Callable[[BaseException], None] | None = None) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed = failed  # told a task's exception, when there is one to tell

    def run(self, step: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(step)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._failed is not None and not task.cancelled() and (error := task.exception()) is not None:
            self._failed(error)

    async def wait(self, timeout: float = 5.0) -> None:
        """What is still running, given up to ``timeout`` seconds to end."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


async def quietly(step: Awaitable[None], *errors: type[BaseException]) -> None:
    """``step``, its ``errors`` suppressed: for work whose failure has nobody left to tell."""
    with contextlib.suppress(*errors):
        await step
