"""LIST/LSUB pattern matching without backtracking: every pattern of a command, one pass per name.

Use::

    match = ListMatcher(["INBOX*", "Archive/%"], separator="/")
    match("INBOX/sub")                      # True
    match.prefixes("a/b/c")                 # [True/False for "a", "a/b", "a/b/c"]

Rules:
1. ``*`` matches zero or more characters, ``%`` zero or more characters other than the
   hierarchy separator; every other character matches itself (RFC 3501 §6.3.8, RFC 9051 §6.3.9).
   A name matches when at least one of the patterns matches all of it.
2. INBOX is case-insensitive (RFC 3501 §5.1): for the name ``INBOX`` and the names below it
   (``INBOX/...``), a pattern that starts with ``INBOX`` in any case is compared without case
   (``str.lower`` per character, as ``re.IGNORECASE`` does for ASCII). Other names compare
   exactly.
3. Cost: time linear in the length of the name times the length of the patterns, never
   exponential (the regular expression this replaces backtracked: ``*`` thirty times stalled
   the event loop for 22 s). The patterns run as one bit-parallel NFA (shift-and): one Python
   integer holds the state of every pattern, one step per character of the name.
   Consecutive wildcards collapse first (``**``, ``*%``, ``%*`` → ``*``; ``%%`` → ``%``), so a
   pattern keeps at most one wildcard between two literal characters.
4. ``longest`` (optional): the length of the longest name the matcher will see. A pattern with
   more literal characters than that matches nothing and is dropped, so the state never has
   more than about 2 × ``longest`` + 2 bits per pattern, whatever the client sent.
5. Pure: no IO, no clock. The caller bounds the number and length of patterns (the parser's
   ``MAX_LIST_PATTERNS`` and ``MAX_LIST_PATTERN``) and runs big listings off the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["ListMatcher"]

_STAR: Final = "*"
_PERCENT: Final = "%"
_INBOX: Final = "INBOX"


def _tokens(pattern: str) -> list[str]:
    """Rule 3: the pattern with runs of wildcards collapsed to one."""
    out: list[str] = []
    for ch in pattern:
        if ch == _STAR or ch == _PERCENT:
            if out and (out[-1] == _STAR or out[-1] == _PERCENT):
                if ch == _STAR:
                    out[-1] = _STAR
                continue
        out.append(ch)
    return out


class ListMatcher:
    """The patterns of one LIST/LSUB command, compiled once (module rules)."""

    def __init__(self, patterns: Sequence[str], separator: str = "/", longest: int | None = None) -> None:
        if len(separator) != 1:
            raise ValueError("the hierarchy separator is one character")
        self.separator = separator
        start = accept = star = percent = 0
        exact: dict[str, int] = {}  # character → bits of the positions that expect it
        folded: dict[str, int] = {}  # lower-cased character → bits, INBOX patterns only (rule 2)
        bit = 0
        for pattern in patterns:
            tokens = _tokens(pattern)
            literals = sum(1 for t in tokens if t != _STAR and t != _PERCENT)
            if longest is not None and literals > longest:
                continue  # rule 4: cannot match any name we will see
            fold = pattern[:5].upper() == _INBOX
            start |= 1 << bit
            for tok in tokens:
                b = 1 << bit
                if tok == _STAR:
                    star |= b
                elif tok == _PERCENT:
                    percent |= b
                else:
                    exact[tok] = exact.get(tok, 0) | b
                    if fold:
                        low = tok.lower()
                        folded[low] = folded.get(low, 0) | b
                bit += 1
            accept |= 1 << bit  # the position after the last token: no token, never shifted on
            bit += 1
        self._exact = exact
        self._folded = folded
        self._star = star
        self._percent = percent
        self._wild = star | percent
        self._accept = accept
        self._start = self._close(start)

    def _close(self, states: int) -> int:
        """A wildcard may match nothing: also be past it (one step: wildcards never follow one
        another after rule 3)."""
        return states | ((states & self._wild) << 1)

    def _run(self, name: str, stops: bool) -> list[bool]:
        """Match ``name``; with ``stops``, also report each prefix that ends before a separator."""
        states = self._start
        exact, wild, star, percent, sep = self._exact, self._wild, self._star, self._percent, self.separator
        folded = self._folded if (name == _INBOX or name.startswith(_INBOX + sep)) else None
        out: list[bool] = []
        for ch in name:
            if stops and ch == sep:
                out.append(bool(states & self._accept))
            if not states:
                if not stops:
                    return [False]
                continue
            lit = exact.get(ch, 0)
            if folded is not None:
                lit |= folded.get(ch.lower(), 0)
            nxt = ((states & lit) << 1) | (states & star)
            if ch != sep:
                nxt |= states & percent
            states = nxt | ((nxt & wild) << 1)
        out.append(bool(states & self._accept))
        return out

    def __call__(self, name: str) -> bool:
        """True when one of the patterns matches the whole of ``name`` (rules 1-2)."""
        return self._run(name, stops=False)[-1]

    def prefixes(self, name: str) -> list[bool]:
        """For each name made of the first levels of ``name`` (``a``, ``a/b``, ``a/b/c`` for
        ``a/b/c``), whether it matches: the parents of a name cost no more than the name."""
        return self._run(name, stops=True)
