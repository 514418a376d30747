"""Each provider's own share of upstream connections (issue 11).

One aiohttp session serves every provider, without a limit of its own: the simulators (and any
two resellers behind one CDN name) share a host:port, so aiohttp's per-host limit cannot tell
providers apart. Instead each provider has :class:`Slots`: at most ``pool.connections`` of its
attempts hold a connection at once, and an attempt that finds them all busy queues for at most
``pool.wait`` seconds. A stalling provider fills its own slots only; every other provider keeps
all of its own.

Slots belong to a provider's name, not to its Provider object: a reload brings new objects, and
the requests in flight on the old ones keep (and give back) their places in the same count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class Slots:
    """A counting semaphore whose happy path is two attribute reads and an increment: no future,
    no timer, no await. Only a full pool queues (first come, first served) under a timer."""

    __slots__ = ("limit", "busy", "waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self.waiters: deque[asyncio.Future[bool]] = deque()

    def take(self) -> bool:
        """A slot at once, if one is free and nobody queues for one (no overtaking the queue)."""
        if self.busy < self.limit and not self.waiters:
            self.busy += 1
            return True
        return False

    async def wait(self, seconds: float) -> bool:
        """Queue for a slot for at most ``seconds``; True once one is ours."""
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        self.waiters.append(turn)
        timer = loop.call_later(seconds, _expire, turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if _handed(turn):  # cancelled (the client left) just as a slot was handed over
                self.give_back()
            raise
        finally:
            timer.cancel()
            if not _handed(turn):
                with contextlib.suppress(ValueError):
                    self.waiters.remove(turn)

    def give_back(self) -> None:
        """A slot is free: handed to the first in the queue (the count stays), else counted free."""
        if self.busy <= self.limit:
            while self.waiters:
                turn = self.waiters.popleft()
                if not turn.done():
                    turn.set_result(True)
                    return
        self.busy -= 1

    def resize(self, limit: int) -> None:
        """A reload's new size. Shrunk: the slots in use are kept, and given back without
        handing them on until the count is under the new size. Grown: the queue is served."""
        self.limit = limit
        while self.busy < self.limit and self.waiters:
            turn = self.waiters.popleft()
            if not turn.done():
                self.busy += 1
                turn.set_result(True)


def _handed(turn: asyncio.Future[bool]) -> bool:
    return turn.done() and not turn.cancelled() and turn.result()


def _expire(turn: asyncio.Future[bool]) -> None:
    if not turn.done():
        turn.set_result(False)
