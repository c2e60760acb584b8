"""Organisational domains for DMARC (RFC 7489 §3.2) from the Public Suffix List.

Rules:
1. ``OrgDomains.org_domain(name)`` is the registrable domain of ``name`` (one label below its
   public suffix, RFC 7489 §3.2 steps 1-4), lower-case, without a trailing dot. A name that is
   itself a public suffix, or is malformed, is its own organisational domain.
2. The list is ``publicsuffixlist``'s bundled copy unless a file is given (``from_file``; an
   admin may keep it fresher than the package). ``bundled()`` builds the bundled one once
   (about 50 ms) and shares it: it is read-only data, like a compiled table, not state: its
   answers are memoised (bounded, ``MAX_MEMO``), which only repeats what the list says.
3. ``aligned(a, b, mode)``: strict (``"s"``) means the same name; relaxed (``"r"``) the same
   organisational domain (RFC 7489 §3.1.1, §3.1.2). Comparison ignores case and a trailing dot.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from publicsuffixlist import PublicSuffixList


def _norm(name: str) -> str:
    return name.strip().lower().rstrip(".")


# org_domain runs for every message (DMARC); its answers for one list never change, so they are
# kept, up to this many names (then the memo starts over: a bound, not an eviction policy).
MAX_MEMO = 4096


class OrgDomains:
    def __init__(self, psl: PublicSuffixList) -> None:
        self._psl = psl
        self._memo: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: Path) -> OrgDomains:
        with path.open("rb") as f:
            return cls(PublicSuffixList(f))

    def org_domain(self, name: str) -> str:
        name = _norm(name)
        known = self._memo.get(name)
        if known is not None:
            return known
        try:
            org = self._psl.privatesuffix(name)
        except (ValueError, UnicodeError):
            org = None
        found = str(org) if org else name
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[name] = found
        return found

    def aligned(self, a: str, b: str, mode: Literal["r", "s"]) -> bool:
        a, b = _norm(a), _norm(b)
        if not a or not b:
            return False
        if mode == "s":
            return a == b
        return a == b or self.org_domain(a) == self.org_domain(b)


@functools.cache
def bundled() -> OrgDomains:
    """Rule 2: the list shipped with ``publicsuffixlist``."""
    return OrgDomains(PublicSuffixList())
