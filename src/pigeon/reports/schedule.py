"""When the running server sends its reports: once a day, at a fixed UTC hour plus a random
spread, on the injected clock.

Rules:
1. A report covers one UTC day, 00:00-24:00 (RFC 8460 §4.1; DMARC's default interval,
   RFC 7489 §7.2, is the same day). The server sends the finished days' reports the next day
   at ``SEND_HOUR`` UTC plus a random spread of up to ``SPREAD`` seconds, drawn anew each day:
   receivers do not get every sender's reports in the same minute (RFC 8460 §4.1: "the reports
   should be delivered after some delay, perhaps several hours").
2. At start, when today's time has passed already, the timer sends at once (a server that was
   down at its time catches up); what went out before is not sent again, because each kind
   keeps on disk what it sent (``reports.registry`` rule 1). A restart therefore neither loses
   nor repeats a report.
3. It sleeps on the clock at most ``CHECK`` seconds at a time and looks at the time again, so
   a suspended machine or a changed clock moves the send by at most that much.
4. ``interval`` (``[reports] interval``, for tests) replaces rule 1's daily time: a send every
   that many seconds, the first one ``interval`` after start.
5. A send that raises is logged and the timer goes on to the next time; it never ends the server.

What can go wrong: rule 5. Stopping the server cancels the timer; a send under way at that
moment is cancelled between two reports, and the unsent ones stay due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pigeon.core.clock import Clock

log = logging.getLogger(__name__)

DAY = 86400.0
SEND_HOUR = 1  # 01:00 UTC: an hour of slack after the day ends for the last counts to be written
SPREAD = 4 * 3600.0  # "perhaps several hours" (RFC 8460 §4.1): 01:00-05:00 UTC
CHECK = 3600.0  # rule 3: re-read the clock at least hourly


def todays_time(now: float, spread: float) -> float:
    """Rule 1: the send time of the UTC day ``now`` is in, ``spread`` in [0, 1)."""
    return now - now % DAY + SEND_HOUR * 3600 + spread * SPREAD


class ReportTimer:
    def __init__(self, clock: Clock, send: Callable[[], Awaitable[object]], rand: Callable[[], float],
                 interval: float | None = None) -> None:
        self.clock = clock
        self.send = send
        self.rand = rand
        self.interval = interval
        self.runs = 0  # sends done (for tests and the log)

    def first_time(self) -> float:
        now = self.clock.now()
        if self.interval is not None:
            return now + self.interval  # rule 4
        today = todays_time(now, self.rand())
        return today if today > now else now  # rule 2: past today's time → at once

    def next_time(self, after: float) -> float:
        if self.interval is not None:
            return after + self.interval
        tomorrow = after - after % DAY + DAY
        return todays_time(tomorrow, self.rand())

    async def run(self) -> None:
        due = self.first_time()
        while True:
            while (left := due - self.clock.now()) > 0:
                await self.clock.sleep(min(left, CHECK))  # rule 3
            try:
                await self.send()
            except asyncio.CancelledError:
                raise
            except Exception:  # rule 5
                log.exception("reports: the daily send failed; next try at the next time")
            self.runs += 1
            due = self.next_time(self.clock.now())
