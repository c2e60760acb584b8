"""The header values SEARCH tests, kept in memory per process (``imapd.search`` rule 9).

Rules:
1. For each (folder directory, UIDVALIDITY, cache key) a map UID → the field's decoded values
   as the index caches them (JSON, always ASCII: ``json.dumps`` escapes the rest as ``\\uXXXX``),
   in lower case. A message's content never changes and a UID is never reused within one
   UIDVALIDITY, so an entry never goes stale; entries of expunged messages are dropped when
   a map grows past twice the folder's size.
2. Only what the index cache holds is kept (``Mailbox.cache_many``): the UIDs not yet in a map
   are read from it in one query; values the index has not cached (or too large to read in
   bulk) are left to the search, which computes and caches them as before.
3. Bounded: at most ``MAX_VALUES`` values in all; the least recently used maps are dropped
   first, and a folder with more messages than that is not kept at all (the search reads
   the index as before).
4. Lower case is enough for the search's two uses: ruling a message out (the needle, plain
   ASCII, lower-cased, not in the value and no ``\\u`` escape) and matching the rest, which
   compares casefolded text (``values_contain``): lowering ASCII letters, or the hex digits
   of an escape, changes no character's casefold.
5. Safe from several threads (searches run in worker threads): the maps' table under a lock;
   a map is never changed once handed out: new values go into a copy that replaces it (a
   search iterating over the old one is not disturbed).
6. ``rule_out`` also keeps, per needle (at most ``MAX_NEEDLES``, least recently used dropped),
   which UIDs it rules out and the values of the others; a repeated search tests only the
   values added since (a new message's), not the whole folder again.

What can go wrong: memory, bounded by rule 3 (~100 octets a value: ~10 MB at the limit).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from pigeon.store.mailbox import Mailbox

#: Rule 3: values kept per process. ~100 octets each (a From value of ~40 octets, the int key,
#: dict overhead): ~10 MB, the 1,000-message INBOX of 100 sessions' searches many times over.
MAX_VALUES: Final = 100_000
#: Rule 6: needles remembered per process (each a set of the folder's UIDs at most).
MAX_NEEDLES: Final = 64
_ESCAPE: Final = b"\\u"
#: Rule 6: (map, UIDs ruled out, the others' values, every UID tested)
_Ruling = tuple[dict[int, bytes], set[int], dict[int, bytes], set[int]]


class HeaderMemo:
    """Rules 1-5."""

    def __init__(self, max_values: int = MAX_VALUES) -> None:
        self.max_values = max_values
        self._maps: OrderedDict[tuple[str, int, str], dict[int, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._needles: OrderedDict[tuple[str, int, str, bytes], _Ruling] = OrderedDict()

    def values(self, mailbox: Mailbox, uids: Sequence[int], key: str) -> dict[int, bytes] | None:
        """UID → the lower-cased cached value of ``key``, for the ascending ``uids`` (those the
        index has cached, maybe more); None when the folder is too large to keep (rule 3)."""
        if len(uids) > self.max_values:
            return None
        name = (str(mailbox.directory), mailbox.uidvalidity, key)
        with self._lock:
            memo = self._maps.get(name)
            if memo is None:
                memo = self._maps[name] = {}
            self._maps.move_to_end(name)
        missing = sorted(set(uids).difference(memo.keys()))
        if missing:  # rule 2
            got = mailbox.cache_many(missing, [key])
            fresh = {u: v.lower() for (u, _), v in got.items() if v is not None}
            if len(memo) + len(fresh) > 2 * len(uids) + 64:  # rule 1: expunged ones
                wanted = set(uids)
                memo = {u: v for u, v in memo.items() if u in wanted}
            else:
                memo = dict(memo)
            memo.update(fresh)  # rule 5: a new map
            with self._lock:
                self._maps[name] = memo
            self._trim(name)
        return memo

    def rule_out(self, mailbox: Mailbox, uids: Sequence[int], key: str,
                 needle: bytes) -> tuple[set[int], dict[int, bytes]] | None:
        """(UIDs whose cached value of ``key`` cannot contain ``needle``, lower-case plain
        ASCII; the cached values of the others) for the ascending ``uids`` (maybe more UIDs
        than those: the caller looks up its own); UIDs in neither are not cached. None when
        the folder is too large to keep (rule 3). Rule 6."""
        kept = self.values(mailbox, uids, key)
        if kept is None:
            return None
        name = (str(mailbox.directory), mailbox.uidvalidity, key, needle)
        with self._lock:
            got = self._needles.get(name)
            if got is not None:
                self._needles.move_to_end(name)
        if got is not None and got[0] is kept:
            return got[1], got[2]
        if got is None or len(got[3]) > 2 * len(kept) + 64:  # from scratch (rule 1: expunged ones)
            ruled, others, tested = set(), {}, set()
        else:  # copies: the old ones may be in use in another thread (rule 5)
            ruled, others, tested = set(got[1]), dict(got[2]), set(got[3])
        for uid in kept.keys() - tested:
            raw = kept[uid]
            if needle in raw or _ESCAPE in raw:
                others[uid] = raw
            else:
                ruled.add(uid)
        tested.update(kept.keys())
        with self._lock:
            self._needles[name] = (kept, ruled, others, tested)
            self._needles.move_to_end(name)
            while len(self._needles) > MAX_NEEDLES:
                self._needles.popitem(last=False)
        return ruled, others

    def _trim(self, keep: tuple[str, int, str]) -> None:
        """Rule 3: drop the least recently used maps (never ``keep``) while over the limit."""
        with self._lock:
            total = sum(len(m) for m in self._maps.values())
            for name in list(self._maps):
                if total <= self.max_values:
                    break
                if name != keep:
                    total -= len(self._maps.pop(name))
