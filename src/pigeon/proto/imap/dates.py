"""IMAP dates (RFC 3501 §9 ``date``, ``date-time``) and INTERNALDATE rendering.

Rules:
1. ``date`` (SEARCH BEFORE/ON/SINCE...) is ``d-Mon-yyyy`` with a 1- or 2-digit day, bare or
   quoted; ``date-time`` (APPEND) is ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` with a space-padded or
   two-digit day. Month names are matched case-insensitively (ABNF strings are).
2. A date that does not exist (31-Feb) or a zone over ±99:59 (RFC 5322 §3.3 allows 4 digits) is
   refused.
3. ``format_internaldate`` writes ``"17-Jul-1996 02:44:25 -0700"`` (RFC 3501 §9 ``date-time``,
   two-digit day, the quotes included) in the given zone offset.

What can go wrong: ``ValueError`` with the reason (the parser makes it a ``ParseError``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

__all__ = ["MONTHS", "format_internaldate", "parse_date", "parse_datetime"]

MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUM: Final = {m.upper(): i + 1 for i, m in enumerate(MONTHS)}
_DATE_RE: Final = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})\Z")
_DATETIME_RE: Final = re.compile(
    r"( [0-9]|[0-9]{2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})\Z"
)


def _month(name: str) -> int:
    m = _MONTH_NUM.get(name.upper())
    if m is None:
        raise ValueError(f"bad month {name!r}")
    return m


def parse_date(text: str) -> dt.date:
    """``1-Feb-1994`` → date (the quotes, if any, already removed by the caller)."""
    m = _DATE_RE.match(text)
    if m is None:
        raise ValueError("date must be d-Mon-yyyy")
    return dt.date(int(m.group(3)), _month(m.group(2)), int(m.group(1)))


def parse_datetime(text: str) -> dt.datetime:
    """``17-Jul-1996 02:44:25 -0700`` (without the quotes) → aware datetime."""
    m = _DATETIME_RE.match(text)
    if m is None:
        raise ValueError("date-time must be dd-Mon-yyyy hh:mm:ss +zzzz")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    if int(zm) > 59:
        raise ValueError("bad zone minutes")
    offset = dt.timedelta(hours=int(zh), minutes=int(zm))
    tz = dt.timezone(-offset if sign == "-" else offset)
    return dt.datetime(int(year), _month(mon), int(day.strip()), int(hh), int(mm), int(ss), tzinfo=tz)


def format_internaldate(when: float | dt.datetime, offset_minutes: int = 0) -> str:
    """Quoted ``"17-Jul-1996 02:44:25 -0700"``: a unix time shown in the zone ``offset_minutes``
    east of UTC, or an aware datetime in its own zone (a naive one is taken as UTC)."""
    if isinstance(when, dt.datetime):
        d = when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)
    else:
        d = dt.datetime.fromtimestamp(when, dt.timezone(dt.timedelta(minutes=offset_minutes)))
    off = d.utcoffset() or dt.timedelta(0)
    total = int(off.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return (
        f'"{d.day:02d}-{MONTHS[d.month - 1]}-{d.year:04d} {d.hour:02d}:{d.minute:02d}:{d.second:02d} '
        f'{sign}{total // 60:02d}{total % 60:02d}"'
    )
