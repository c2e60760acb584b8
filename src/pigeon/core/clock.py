"""The clock seam, injected wherever time matters (back-off, expiry, throttles, dates).

Only the ``Clock`` protocol lives here: ``core`` reads no clock and does no I/O (the
import-linter contract "proto and core are pure"). The implementations are in
``pigeon.clocks``: ``SystemClock`` (the composition root builds one) and ``FakeClock`` (tests
move it by hand).
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (``time.time()`` for the real clock)."""
        ...

    async def sleep(self, seconds: float) -> None: ...
