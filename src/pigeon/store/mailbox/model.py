"""Values the mailbox store hands to IMAP and POP3 sessions, and its one exception.

Rules:
1. Every value here is immutable (frozen dataclasses); a session may keep them across calls.
2. ``MessageMeta.flags`` spells system flags as IMAP does (``\\Seen`` …) and carries keywords
   as given by the client; ``\\Recent`` is never a stored flag (ask ``Mailbox.is_recent``).
3. ``MessageMeta.size`` is RFC822.SIZE: octets with CRLF line ends (RFC 3501 §2.3.4), taken
   from the Maildir ``W=`` field when present, so it never requires reading the file.
4. ``MailboxError.code`` is an IMAP response code (RFC 5530, RFC 6154 ``USEATTR``) that the
   session puts in its ``NO [CODE]`` reply; ``str(error)`` is human text, never a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ErrorCode = Literal["NONEXISTENT", "ALREADYEXISTS", "CANNOT", "LIMIT", "INUSE", "USEATTR",
                    "EXPUNGEISSUED", "OVERQUOTA"]


class MailboxError(Exception):
    """A refused mailbox operation; ``code`` is the IMAP response code (Rule 4)."""

    def __init__(self, code: ErrorCode, text: str) -> None:
        super().__init__(text)
        self.code: ErrorCode = code
        self.text = text


@dataclass(frozen=True)
class MailboxInfo:
    name: str  # UTF-8, hierarchy separator "/"; "INBOX" is always spelled "INBOX"
    special_use: str | None  # "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" or None
    subscribed: bool
    has_children: bool
    selectable: bool  # False for a \Noselect parent that exists only as a hierarchy node


@dataclass(frozen=True)
class MailboxStatus:
    messages: int
    recent: int
    uidnext: int
    uidvalidity: int
    unseen: int
    size: int
    highestmodseq: int
    deleted: int


@dataclass(frozen=True, slots=True)
class MessageMeta:
    uid: int
    flags: frozenset[str]  # Rule 2
    size: int  # Rule 3
    internaldate: float  # unix time: file mtime at arrival, or the APPEND date
    modseq: int
    cur_dir: Path = field(repr=False)  # the folder's cur/ directory (as last seen)
    filename: str = field(repr=False)  # the file name in cur/ (as last seen)

    @property
    def path(self) -> Path:
        """The file as last seen; it may go stale (read through ``Mailbox.read``).

        Built on demand: making 10,000 ``Path`` objects would double the cost of SELECT.
        """
        return self.cur_dir / self.filename


@dataclass(frozen=True)
class Changes:
    """What ``Mailbox.sync`` found since the view's previous sync (already applied to the view)."""

    new: list[MessageMeta]  # appended to the view, UID order
    expunged: list[int]  # UIDs gone from the view, ascending
    changed: list[MessageMeta]  # flag changes made by others (or by other tools), UID order

    @property
    def empty(self) -> bool:
        return not (self.new or self.expunged or self.changed)


_new = object.__new__
_Setter = Callable[[object, object], None]
_SETTERS: tuple[_Setter, ...] = tuple(
    vars(MessageMeta)[f].__set__
    for f in ("uid", "flags", "size", "internaldate", "modseq", "cur_dir", "filename"))
_set_uid, _set_flags, _set_size, _set_date, _set_modseq, _set_dir, _set_name = _SETTERS


def make_meta(uid: int, flags: frozenset[str], size: int, internaldate: float, modseq: int,
              cur_dir: Path, filename: str) -> MessageMeta:
    """``MessageMeta(...)`` without the frozen-dataclass ``__init__`` (8× faster).

    SELECT of a 10,000-message folder builds 10,000 of them; the frozen ``__init__`` alone
    cost ~35 ms there. The result is an ordinary, equal, immutable ``MessageMeta``.
    """
    meta: MessageMeta = _new(MessageMeta)
    _set_uid(meta, uid)
    _set_flags(meta, flags)
    _set_size(meta, size)
    _set_date(meta, internaldate)
    _set_modseq(meta, modseq)
    _set_dir(meta, cur_dir)
    _set_name(meta, filename)
    return meta
