"""IMAP sequence sets (RFC 3501 §9 ``sequence-set``, RFC 5182 ``$``, RFC 9051 §9).

Rules:
1. A ``SeqSet`` is a tuple of ranges ``(lo, hi)`` with ``lo <= hi``; ``STAR`` (0, never a valid
   number) stands for ``*``, "the largest number in use" (RFC 3501 §9 ``seq-number``). ``2:*``
   and ``*:2`` are the same range (RFC 3501 §9: "contains all numbers between the two bounds").
   The set ``$`` (RFC 5182 §2: the result saved by ``SEARCH RETURN (SAVE)``) is ``saved=True``
   with no ranges; it is never mixed with other elements.
2. Numbers are ``nz-number``: 1 … 4294967295 (RFC 3501 §9). Anything else is ``SeqSetError``.
3. Resolution never enumerates a range wider than the mailbox: ``1:4294967295`` against ten
   messages costs ten steps, not four billion.
   - message sequence numbers (``resolve_seq``): ``*`` is the message count; a number over the
     count is an error (the session answers ``BAD``, RFC 3501 §6.4.8 / RFC 9051 §6.4.9 leave
     only UID sets tolerant of non-existent numbers); against an empty mailbox every set is an
     error, since even ``*`` names no message.
   - UIDs (``resolve_uids``): non-existent UIDs are ignored; ``*`` is the highest UID in the
     mailbox, and ``n:*`` always includes it even when ``n`` is higher (RFC 3501 §6.4.8).
4. ``compact`` renders a set of numbers as the shortest range list (``1:3,7``), for COPYUID,
   APPENDUID, VANISHED and ESEARCH ``ALL`` (RFC 4315, RFC 7162, RFC 4731).

What can go wrong: ``SeqSetError`` (a ValueError) for malformed text or out-of-range numbers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from pigeon.proto.imap.errors import SeqSetError

__all__ = ["MAX_NUMBER", "STAR", "SeqSet", "compact", "from_numbers", "parse_seqset"]

STAR: Final = 0  # "*" in a range
MAX_NUMBER: Final = 4294967295  # RFC 3501 §9: nz-number fits in 32 bits
_DIGITS: Final = 10  # len(str(MAX_NUMBER)); longer digit runs are rejected before int()


@dataclass(frozen=True, slots=True)
class SeqSet:
    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False  # "$" (RFC 5182)

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def num(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(num(lo) if lo == hi else f"{num(lo)}:{num(hi)}" for lo, hi in self.ranges)

    @property
    def has_star(self) -> bool:
        return any(STAR in r for r in self.ranges)

    def _bounds(self, star: int) -> list[tuple[int, int]]:
        out = []
        for lo, hi in self.ranges:
            a = star if lo == STAR else lo
            b = star if hi == STAR else hi
            out.append((min(a, b), max(a, b)))
        return out

    def _merged(self, star: int) -> list[tuple[int, int]]:
        """The ranges with ``*`` replaced, sorted and merged (so overlapping ranges cost once)."""
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(self._bounds(star)):
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def contains(self, n: int, star: int) -> bool:
        """Is ``n`` in the set when ``*`` is ``star``?"""
        return any(lo <= n <= hi for lo, hi in self._bounds(star))

    def resolve_seq(self, count: int) -> list[int]:
        """Sorted sequence numbers named by the set in a mailbox of ``count`` messages."""
        if self.saved:
            raise SeqSetError("$ must be replaced by the saved result first")
        if count <= 0:
            raise SeqSetError("no messages")
        out: list[int] = []
        for lo, hi in self._merged(count):
            if hi > count:
                raise SeqSetError(f"message {hi} does not exist")
            out.extend(range(lo, hi + 1))
        return out

    def resolve_uids(self, uids: Sequence[int]) -> list[int]:
        """The UIDs of ``uids`` (sorted ascending) that the set names; others are ignored."""
        if self.saved:
            raise SeqSetError("$ must be replaced by the saved result first")
        if not uids:
            return []
        star = uids[-1]
        out: list[int] = []
        for lo, hi in self._merged(star):
            i = bisect.bisect_left(uids, lo)
            j = bisect.bisect_right(uids, hi)
            out.extend(uids[i:j])
        return out


def _number(text: str, allow_star: bool) -> int:
    if text == "*":
        if allow_star:
            return STAR
        raise SeqSetError("* not allowed here")
    if not text or len(text) > _DIGITS or not text.isascii() or not text.isdigit():
        raise SeqSetError(f"bad number {text[:20]!r}")
    n = int(text)
    if not 1 <= n <= MAX_NUMBER:
        raise SeqSetError(f"number out of range: {text}")
    return n


def parse_seqset(text: str, *, allow_saved: bool = True, allow_star: bool = True) -> SeqSet:
    """``1:*,5,7:9`` → ``SeqSet``; ``$`` → ``SeqSet(saved=True)`` when ``allow_saved``."""
    if text == "$":
        if not allow_saved:
            raise SeqSetError("$ not allowed here")
        return SeqSet(saved=True)
    if not text:
        raise SeqSetError("empty sequence set")
    ranges = []
    for part in text.split(","):
        lo_s, sep, hi_s = part.partition(":")
        lo = _number(lo_s, allow_star)
        hi = _number(hi_s, allow_star) if sep else lo
        if lo != STAR and hi != STAR and lo > hi:
            lo, hi = hi, lo
        ranges.append((lo, hi))
    return SeqSet(tuple(ranges))


def compact(numbers: Iterable[int]) -> str:
    """Sorted, merged rendering: ``[3, 1, 2, 7]`` → ``"1:3,7"``; ``""`` for no numbers."""
    parts: list[str] = []
    start = prev = -1
    for n in sorted(set(numbers)):
        if n == prev + 1 and start >= 0:
            prev = n
            continue
        if start >= 0:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start >= 0:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def from_numbers(numbers: Iterable[int]) -> SeqSet:
    """A ``SeqSet`` of exactly these numbers, merged into ranges."""
    text = compact(numbers)
    return parse_seqset(text) if text else SeqSet()
