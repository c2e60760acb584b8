"""The RFC 5322 §3.3 date-time, for ``Received:``, ``Date:`` and DSN fields.

Rules:
1. ``rfc5322_date(now)`` formats the instant it is given (seconds since the epoch), never the
   current time: the caller reads its clock.
2. The text is in the server's local zone with its numeric offset
   (``Tue, 01 Jul 2025 10:00:00 +0200``), as Postfix writes it; the zone is the one fact of
   the environment this module reads (through ``datetime.astimezone``).
3. The text changes once a second and is made once per second (every message's Received:): a
   one-entry cache, replaced whole, so threads see a consistent pair.

What can go wrong: nothing raises for a timestamp the platform can represent.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime


def rfc5322_date(now: float) -> str:
    """``Tue, 01 Jul 2025 10:00:00 +0200`` in the server's local zone (rules 1-3)."""
    return _DATES.text(now)


class _SecondCache:
    """The date text of the current second (rule 3)."""

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, "")

    def text(self, now: float) -> str:
        sec = int(now)
        cached = self._cached
        if cached[0] != sec:
            cached = (sec, format_datetime(datetime.fromtimestamp(sec).astimezone()))
            self._cached = cached
        return cached[1]


_DATES = _SecondCache()
