"""Queue ids: short, unique, sortable by creation time, safe as file names.

Rules:
1. 16 characters of ``[0-9A-Z]`` (Crockford-like base32 without I, L, O, U): 9 of microsecond
   time, 7 of randomness (``ENTROPY_BITS``). The time field holds the low 45 bits of the
   microseconds, so it wraps every 2**45 µs (about 407 days): ids sort as text by creation
   time only within that window. Nothing relies on the order across a wrap (listings sort on
   the record's ``created``; recovery sorts names only to be deterministic).
2. ``is_queue_id`` is the only validator; file names that fail it are never opened as records.
3. ``new_queue_id`` is a pure function of its arguments: the caller reads the clock and draws
   the random bits (``secrets.randbits(ENTROPY_BITS)``), since ``core`` does no I/O. Two ids
   made in the same microsecond differ unless the random bits collide (1 in 2**35).
"""

from __future__ import annotations

import re
from typing import NewType

QueueId = NewType("QueueId", str)

ENTROPY_BITS = 35  # 7 base32 characters
_TIME_CHARS = 9  # 45 bits of microseconds: wraps every ~407 days (rule 1)
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # two characters per ten bits
_TIME_MASK = (1 << 5 * _TIME_CHARS) - 1
_ENTROPY_MASK = (1 << ENTROPY_BITS) - 1
_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{16}$")


def new_queue_id(now: float, entropy: int) -> QueueId:
    """The id of a message created at ``now`` (seconds since the epoch), with ``entropy`` the
    caller's random bits (only the low ``ENTROPY_BITS`` are used)."""
    micros = int(now * 1_000_000)
    # 9 characters of time then 7 of entropy (rule 1), most significant first, ten bits at a time.
    v = ((micros & _TIME_MASK) << ENTROPY_BITS) | (entropy & _ENTROPY_MASK)
    p = _PAIRS
    return QueueId(p[v >> 70 & 1023] + p[v >> 60 & 1023] + p[v >> 50 & 1023] + p[v >> 40 & 1023]
                   + p[v >> 30 & 1023] + p[v >> 20 & 1023] + p[v >> 10 & 1023] + p[v & 1023])


def is_queue_id(text: str) -> bool:
    return bool(_RE.match(text))
