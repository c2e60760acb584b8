"""The parts of the mail store POP3 uses, as Protocols (``pigeon.store.mailbox`` satisfies them).

POP3 needs little of the store: open an account's INBOX, list its messages (UID, size), read
one, and at QUIT remove the deleted ones and mark the retrieved ones ``\\Seen``. Declaring just
that here keeps ``pop3d`` testable with a small fake and independent of the rest of the store
API (docs: imap_contracts.md). Every method is blocking; the session calls them in a worker
thread.

Rules:
1. ``Mailbox.messages()`` is the current view in UID order; POP3 message number n is the n-th
   message of the snapshot taken at login (RFC 1939 §5: numbers stay fixed for the session).
2. ``MessageMeta.size`` counts octets with CRLF line ends, before dot-stuffing (RFC 1939 §11).
3. ``Mailbox.remove(uids)`` deletes regardless of ``\\Deleted`` and returns the UIDs removed;
   a UID already gone (expunged by an IMAP session meanwhile) is simply not in the result.
4. ``Mailbox.read(uid)`` raises ``MailboxError`` with ``code`` ``"EXPUNGEISSUED"`` (or
   ``"NONEXISTENT"``) for a message that is gone, any other exception for a store failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pigeon.core.address import Address


class MessageInfo(Protocol):
    @property
    def uid(self) -> int: ...

    @property
    def size(self) -> int: ...


class Pop3Mailbox(Protocol):
    @property
    def uidvalidity(self) -> int: ...

    def messages(self) -> Sequence[MessageInfo]: ...

    def read(self, uid: int) -> bytes: ...

    def remove(self, uids: Sequence[int]) -> list[int]: ...

    def store(
        self,
        uids: Sequence[int],
        mode: Literal["set", "add", "remove"],
        flags: frozenset[str],
        unchangedsince: int | None = None,
    ) -> tuple[Sequence[MessageInfo], list[int]]: ...

    def close(self) -> None: ...


class Pop3Account(Protocol):
    def select(self, name: str, readonly: bool = False) -> Pop3Mailbox: ...


class Pop3Store(Protocol):
    def account(self, address: Address) -> Pop3Account: ...
