"""Queue ids: short, unique, sortable by creation time, safe as file names.

Rules:
1. 16 characters of ``[0-9A-Z]`` (Crockford-like base32 without I, L, O, U): 9 of microsecond
   time, 7 of randomness. Sortable as text within the years the time field covers.
2. ``is_queue_id`` is the only validator; file names that fail it are never opened as records.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import NewType

QueueId = NewType("QueueId", str)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{16}$")


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def new_queue_id(now: float | None = None) -> QueueId:
    micros = int((time.time() if now is None else now) * 1_000_000)
    return QueueId(_b32(micros, 9) + _b32(secrets.randbits(35), 7))


def is_queue_id(text: str) -> bool:
    return bool(_RE.match(text))
