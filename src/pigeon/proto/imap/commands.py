"""Typed IMAP commands: what ``parser.parse_command`` returns (one frozen dataclass per command).

Rules:
1. Every command carries its ``tag``. Commands with a UID form carry ``uid`` (True for
   ``UID FETCH`` etc., RFC 3501 §6.4.8); their ``sequence`` is then a UID set.
2. Values are decoded and validated: names upper-cased where the grammar is case-insensitive,
   system flags in their canonical spelling (``\\Seen``), mailbox names as sent on the wire but
   decoded from UTF-8 octets to ``str`` with ``INBOX`` folded to upper case (RFC 3501 §5.1). The
   session decodes modified UTF-7 (``mutf7.decode``) when UTF8=ACCEPT is not enabled.
3. Secrets never show in ``repr``: LOGIN's password, AUTHENTICATE's initial response, APPEND data.

What can go wrong: nothing here; these are values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from pigeon.proto.imap.reader import SpooledLiteral
from pigeon.proto.imap.seqset import SeqSet

# --- any state (RFC 3501 §6.1) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability:
    tag: str


@dataclass(frozen=True, slots=True)
class Noop:
    tag: str


@dataclass(frozen=True, slots=True)
class Logout:
    tag: str


@dataclass(frozen=True, slots=True)
class StartTls:
    tag: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    tag: str
    mechanism: str  # upper-cased
    initial_response: str | None = field(default=None, repr=False)  # SASL-IR base64 (RFC 4959); "=" is empty


@dataclass(frozen=True, slots=True)
class Login:
    tag: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Enable:
    tag: str
    capabilities: tuple[str, ...]  # upper-cased (RFC 5161)


@dataclass(frozen=True, slots=True)
class Id:
    tag: str
    params: tuple[tuple[str, str | None], ...] | None  # None for "ID NIL" (RFC 2971)


# --- authenticated state (RFC 3501 §6.3) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """SELECT (QRESYNC (uidvalidity modseq [known-uids [(seq-match uid-match)]])) — RFC 7162 §3.2.5."""

    uidvalidity: int
    modseq: int
    known_uids: SeqSet | None = None
    seq_match: tuple[SeqSet, SeqSet] | None = None  # (known sequence set, matching UID set)


@dataclass(frozen=True, slots=True)
class Select:
    tag: str
    mailbox: str
    readonly: bool = False  # EXAMINE
    condstore: bool = False  # (CONDSTORE), RFC 7162 §3.1.8
    qresync: QresyncParams | None = None


@dataclass(frozen=True, slots=True)
class Create:
    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()  # CREATE ... (USE (\Sent)), RFC 6154 §3


@dataclass(frozen=True, slots=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    tag: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True, slots=True)
class List:
    """LIST, with RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS and RFC 6154 SPECIAL-USE."""

    tag: str
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()  # SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE
    return_subscribed: bool = False
    return_children: bool = False
    return_special_use: bool = False
    return_status: tuple[str, ...] | None = None  # RETURN (STATUS (MESSAGES ...)), RFC 5819
    extended: bool = False  # selection options, several patterns or RETURN were used (RFC 5258 §3)


@dataclass(frozen=True, slots=True)
class Lsub:
    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Namespace:
    tag: str


StatusItem = Literal["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "DELETED"]


@dataclass(frozen=True, slots=True)
class Status:
    tag: str
    mailbox: str
    items: tuple[str, ...]  # StatusItem values, upper-cased, in the client's order


@dataclass(frozen=True, slots=True)
class AppendMessage:
    flags: tuple[str, ...]
    internaldate: dt.datetime | None
    data: bytes | SpooledLiteral = field(repr=False)  # SpooledLiteral: the session holds the octets
    binary: bool = False  # sent as literal8 ~{n} (RFC 3516 §4.4)
    utf8: bool = False  # sent as UTF8 (~{n}) (RFC 6855 §4)


@dataclass(frozen=True, slots=True)
class Append:
    tag: str
    mailbox: str
    messages: tuple[AppendMessage, ...]  # several for MULTIAPPEND (RFC 3502)


@dataclass(frozen=True, slots=True)
class Idle:
    tag: str


# --- selected state (RFC 3501 §6.4) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    tag: str


@dataclass(frozen=True, slots=True)
class Close:
    tag: str


@dataclass(frozen=True, slots=True)
class Unselect:
    tag: str


@dataclass(frozen=True, slots=True)
class Expunge:
    tag: str
    uids: SeqSet | None = None  # UID EXPUNGE set (RFC 4315 §2.1); None for plain EXPUNGE

    @property
    def uid(self) -> bool:
        return self.uids is not None


# SEARCH keys (RFC 3501 §6.4.4, RFC 7162 §3.1.5) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchAll:
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag:
    """ANSWERED/UNANSWERED ... KEYWORD/UNKEYWORD, RECENT/OLD: message has (or lacks) ``flag``."""

    flag: str  # canonical system flag (\\Seen, \\Recent ...) or a keyword
    present: bool = True


@dataclass(frozen=True, slots=True)
class SearchHeader:
    """BCC/CC/FROM/SUBJECT/TO and HEADER: substring of a header field (empty value: field exists)."""

    field: str  # upper-cased field name
    value: str


@dataclass(frozen=True, slots=True)
class SearchText:
    where: Literal["BODY", "TEXT"]
    value: str


@dataclass(frozen=True, slots=True)
class SearchDate:
    """BEFORE/ON/SINCE compare INTERNALDATE; SENTBEFORE/SENTON/SENTSINCE the Date: header."""

    sent: bool
    op: Literal["BEFORE", "ON", "SINCE"]
    date: dt.date


@dataclass(frozen=True, slots=True)
class SearchSize:
    op: Literal["LARGER", "SMALLER"]
    size: int


@dataclass(frozen=True, slots=True)
class SearchSet:
    """A bare sequence set (``uid=False``) or ``UID set``; may be ``$`` (RFC 5182)."""

    sequence: SeqSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class SearchModseq:
    """MODSEQ ["/flags/<flag>" priv|shared|all] n — RFC 7162 §3.1.5."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd:
    """A parenthesised group or the top-level list: every key must match."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    SearchAll
    | SearchFlag
    | SearchHeader
    | SearchText
    | SearchDate
    | SearchSize
    | SearchSet
    | SearchModseq
    | SearchNot
    | SearchOr
    | SearchAnd
)


@dataclass(frozen=True, slots=True)
class Search:
    tag: str
    uid: bool
    criteria: SearchAnd
    charset: str | None = None  # as given, upper-cased; strings are already decoded to str
    return_opts: tuple[str, ...] | None = None  # ESEARCH RETURN (RFC 4731); None: plain SEARCH


# FETCH (RFC 3501 §6.4.5, RFC 3516, RFC 7162) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """``[part.part.TEXT]`` etc.: ``part`` numbers, then an optional ``text`` specifier."""

    part: tuple[int, ...] = ()
    text: Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"] | None = None
    fields: tuple[str, ...] = ()  # for HEADER.FIELDS (.NOT), as sent


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One FETCH item. ``name`` is one of FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.TEXT
    RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE UID MODSEQ BINARY BINARY.SIZE; ``BODY`` with a
    ``section`` is ``BODY[...]`` (``peek`` for BODY.PEEK), likewise BINARY[...]."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None  # <origin.octets>
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """Fetching this sets \\Seen (RFC 3501 §6.4.5: BODY[...] without PEEK, RFC822, RFC822.TEXT;
        RFC 3516 §4.2: BINARY[...] without PEEK)."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None and not self.peek


@dataclass(frozen=True, slots=True)
class Fetch:
    tag: str
    uid: bool
    sequence: SeqSet
    items: tuple[FetchAtt, ...]  # macros ALL/FAST/FULL already expanded
    changedsince: int | None = None  # RFC 7162 §3.1.4
    vanished: bool = False  # RFC 7162 §3.2.6 (UID FETCH only)


@dataclass(frozen=True, slots=True)
class Store:
    tag: str
    uid: bool
    sequence: SeqSet
    mode: Literal["set", "add", "remove"]
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True, slots=True)
class Copy:
    tag: str
    uid: bool
    sequence: SeqSet
    mailbox: str


@dataclass(frozen=True, slots=True)
class Move:
    tag: str
    uid: bool
    sequence: SeqSet
    mailbox: str


ImapCommand = (
    Capability
    | Noop
    | Logout
    | StartTls
    | Authenticate
    | Login
    | Enable
    | Id
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Namespace
    | Status
    | Append
    | Idle
    | Check
    | Close
    | Unselect
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Move
)
