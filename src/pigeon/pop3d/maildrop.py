"""The POP3 maildrop of one session: the snapshot taken at login and what the client did to it.

Rules:
1. The snapshot is INBOX's messages at login, in UID order; message number n is entry n-1 for
   the whole session (RFC 1939 §5), whatever IMAP sessions or deliveries do meanwhile.
2. DELE only marks (RFC 1939 §6); marked messages vanish from STAT, LIST, UIDL and may not be
   retrieved; RSET unmarks all. The removal itself happens in the UPDATE state, at QUIT, and
   only then (a dropped connection removes nothing).
3. Sizes are the store's (octets with CRLF line ends, before dot-stuffing: RFC 1939 §5, §11;
   the way Dovecot counts).
4. The unique-id (UIDL, RFC 1939 §7) is ``"<uidvalidity>.<uid>"``: stable across sessions, the
   same pair IMAP shows (UIDVALIDITY, UID), printable ASCII and at most 70 characters.
5. ``message(n)`` answers a number that names no message, or a deleted one, with the ``-ERR``
   to send, never an exception.

What can go wrong: nothing raises; lookups return a ``Response`` for the client's mistakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pigeon.proto.pop3.responses import ERR_MESSAGE_DELETED, ERR_NO_SUCH_MESSAGE, Response


@dataclass(frozen=True, slots=True)
class Entry:
    number: int  # 1-based, fixed for the session
    uid: int
    size: int


class Maildrop:
    def __init__(self, uidvalidity: int, messages: Sequence[tuple[int, int]]) -> None:
        """``messages``: (uid, size) pairs in UID order (rule 1)."""
        self.uidvalidity = uidvalidity
        self.entries = [Entry(i + 1, uid, size) for i, (uid, size) in enumerate(messages)]
        self.deleted: set[int] = set()  # message numbers
        self.retrieved: set[int] = set()  # message numbers sent whole by RETR

    def __len__(self) -> int:
        return len(self.entries)

    def live(self) -> list[Entry]:
        return [e for e in self.entries if e.number not in self.deleted]

    def stat(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted (RFC 1939 §5 STAT)."""
        live = self.live()
        return len(live), sum(e.size for e in live)

    def message(self, number: int) -> Entry | Response:
        """Rule 5."""
        if not 1 <= number <= len(self.entries):
            return ERR_NO_SUCH_MESSAGE
        if number in self.deleted:
            return ERR_MESSAGE_DELETED
        return self.entries[number - 1]

    def unique_id(self, entry: Entry) -> str:
        """Rule 4."""
        return f"{self.uidvalidity}.{entry.uid}"

    def delete(self, number: int) -> Entry | Response:
        found = self.message(number)
        if isinstance(found, Entry):
            self.deleted.add(number)
        return found

    def reset(self) -> None:
        """RSET (RFC 1939 §5): unmark every deleted message."""
        self.deleted.clear()

    def to_remove(self) -> list[int]:
        """UIDs to remove at QUIT (rule 2)."""
        return [self.entries[n - 1].uid for n in sorted(self.deleted)]

    def to_mark_seen(self) -> list[int]:
        """UIDs retrieved and kept: marked ``\\Seen`` at QUIT, so IMAP clients see them read."""
        return [self.entries[n - 1].uid for n in sorted(self.retrieved - self.deleted)]
