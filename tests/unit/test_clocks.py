"""The implementations of the Clock seam (pigeon.clocks)."""

from __future__ import annotations

import asyncio
import time

from pigeon.clocks import FakeClock, SystemClock
from pigeon.core.clock import Clock


def test_system_clock_reads_the_time_and_sleeps() -> None:
    clock: Clock = SystemClock()
    before = time.time()
    assert before <= clock.now() <= time.time()
    asyncio.run(clock.sleep(0))


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock(1000.0)
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.now())

    async def run() -> None:
        tasks = [asyncio.create_task(sleeper(s)) for s in (5, 10)]
        await asyncio.sleep(0)
        assert clock.now() == 1000.0 and woke == []
        clock.advance(4.9)
        await asyncio.sleep(0)
        assert woke == []
        clock.advance(0.1)  # the 5 s sleeper is due
        await asyncio.sleep(0)
        assert woke == [1005.0]
        clock.advance(100)
        await asyncio.gather(*tasks)
        assert woke == [1005.0, 1105.0]

    asyncio.run(run())
