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
_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{16}$")


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_queue_id(now: float, entropy: int) -> QueueId:
    """The id of a message created at ``now`` (seconds since the epoch), with ``entropy`` the
    caller's random bits (only the low ``ENTROPY_BITS`` are used)."""
    micros = int(now * 1_000_000)
    return QueueId(_b32(micros, _TIME_CHARS) + _b32(entropy, ENTROPY_BITS // 5))


def is_queue_id(text: str) -> bool:
    return bool(_RE.match(text))
