"""The implementations of the ``pigeon.core.clock.Clock`` seam.

``SystemClock`` reads the system clock and sleeps on the event loop; the composition root
(``pigeon.app``, and the command line for its own work) builds it and hands it down. ``FakeClock``
stands still until a test moves it with ``advance``, so back-off, expiry and throttle delays are
tested without waiting. They live here, one layer above ``core``, because reading the clock is
I/O and ``core`` does none.
"""

from __future__ import annotations

import asyncio
import time


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock for tests: time moves only when ``advance`` is called."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._now + seconds, fut))
        await fut

    def advance(self, seconds: float) -> None:
        self._now += seconds
        keep = []
        for due, fut in self._waiters:
            if due <= self._now:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((due, fut))
        self._waiters = keep
