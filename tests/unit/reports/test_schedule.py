"""``reports.schedule``: the daily time (01:00 UTC plus the day's random spread), the catch-up
at start, the hidden ``interval``, a failing send, on a fake clock; ``[reports]`` parsing."""

from __future__ import annotations

import asyncio
import calendar
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.config import ConfigError
from pigeon.config.loader import parse_config
from pigeon.reports.schedule import CHECK, SPREAD, ReportTimer, todays_time

MIDNIGHT = float(calendar.timegm((2026, 12, 7, 0, 0, 0)))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_todays_time_is_one_oclock_utc_plus_the_spread() -> None:
    assert todays_time(MIDNIGHT + 12 * 3600, 0.0) == MIDNIGHT + 3600
    assert todays_time(MIDNIGHT + 5, 0.5) == MIDNIGHT + 3600 + SPREAD / 2


def test_the_timer_sends_once_a_day_at_its_time() -> None:
    async def main() -> list[float]:
        clock = FakeClock(MIDNIGHT + 600)  # 00:10 UTC: today's time is ahead
        sent: list[float] = []

        async def send() -> None:
            sent.append(clock.now())

        timer = ReportTimer(clock, send, lambda: 0.25)  # 01:00 + 1 h
        task = asyncio.get_running_loop().create_task(timer.run())
        for _ in range(3 * 24 * 12):  # three days in 5-minute steps
            await _settle()
            clock.advance(300)
        await _settle()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sent

    sent = asyncio.run(main())
    day = 86400
    # within one 5-minute step of 02:00 UTC, on each of the three days
    assert [round((t - MIDNIGHT) / 300) * 300 for t in sent] == [7200, 7200 + day, 7200 + 2 * day]


def test_a_start_after_todays_time_catches_up_at_once_and_a_failure_does_not_stop_it() -> None:
    async def main() -> tuple[list[float], ReportTimer]:
        clock = FakeClock(MIDNIGHT + 15 * 3600)  # 15:00: today's time has passed
        sent: list[float] = []

        async def send() -> None:
            sent.append(clock.now())
            if len(sent) == 1:
                raise RuntimeError("DNS is down")

        timer = ReportTimer(clock, send, lambda: 0.0)
        task = asyncio.get_running_loop().create_task(timer.run())
        await _settle()
        for _ in range(int(day_steps)):
            clock.advance(CHECK)
            await _settle()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sent, timer

    day_steps = 86400 / CHECK
    sent, timer = asyncio.run(main())
    assert sent[0] == MIDNIGHT + 15 * 3600  # at once
    assert sent[1:] == [MIDNIGHT + 86400 + 3600]  # the next day at 01:00, despite the failure
    assert timer.runs == 2


def test_interval_replaces_the_daily_time() -> None:
    async def main() -> list[float]:
        clock = FakeClock(MIDNIGHT)
        sent: list[float] = []

        async def send() -> None:
            sent.append(clock.now() - MIDNIGHT)

        task = asyncio.get_running_loop().create_task(ReportTimer(clock, send, lambda: 0.9, 60.0).run())
        for _ in range(4):
            await _settle()
            clock.advance(30)
        await _settle()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sent

    assert asyncio.run(main()) == [60.0, 120.0]


def test_reports_section() -> None:
    base = 'hostname = "mx.example.test"\ndata_dir = "/tmp/x"\n'
    cfg = parse_config(base, "t.toml", Path("/tmp"))
    assert cfg.reports.send and cfg.reports.interval is None
    cfg = parse_config(base + "[reports]\nsend = false\ninterval = \"2s\"\n", "t.toml", Path("/tmp"))
    assert not cfg.reports.send and cfg.reports.interval == 2.0
    with pytest.raises(ConfigError, match=r"reports.interval"):
        parse_config(base + "[reports]\ninterval = 0\n", "t.toml", Path("/tmp"))
    with pytest.raises(ConfigError, match=r"reports.daily"):
        parse_config(base + "[reports]\ndaily = 1\n", "t.toml", Path("/tmp"))
