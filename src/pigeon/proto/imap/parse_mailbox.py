"""Parsers of the mailbox commands: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST,
LSUB, STATUS, APPEND.

Rules:
1. SELECT/EXAMINE parameters: ``CONDSTORE`` (RFC 7162 §3.1.8) and ``QRESYNC (uidvalidity modseq
   [known-uids [(seq-set uid-set)]])`` (RFC 7162 §3.2.5); any other parameter is refused.
2. LIST follows RFC 5258 §6: ``LIST [SP (selection)] SP reference SP (pattern / (patterns))
   [SP RETURN (options)]``; RECURSIVEMATCH alone is an error (RFC 5258 §3). Return options:
   SUBSCRIBED, CHILDREN (RFC 5258), SPECIAL-USE (RFC 6154), STATUS (RFC 5819). A reference or
   pattern over ``MAX_LIST_PATTERN`` octets, or more than ``MAX_LIST_PATTERNS`` patterns, is a
   ``ParseError`` (BAD): the matching work of one LIST stays bounded (``listmatch`` rule 3).
3. STATUS items are the RFC 3501/9051 ones plus SIZE (RFC 8438), HIGHESTMODSEQ (RFC 7162) and
   DELETED (RFC 9051).
4. APPEND takes one or more messages (MULTIAPPEND, RFC 3502 §6.3.11): each with optional flags
   and date-time, then a literal, a literal8 (RFC 3516 §4.4) or ``UTF8 (literal8)`` (RFC 6855 §4).
   A message the framing core passed on is a ``SpooledLiteral`` (its octets are the session's).
"""

from __future__ import annotations

from typing import Final

from pigeon.proto.imap import args
from pigeon.proto.imap.commands import (
    Append,
    AppendMessage,
    Create,
    Delete,
    List,
    Lsub,
    QresyncParams,
    Rename,
    Select,
    Status,
    Subscribe,
    Unsubscribe,
)
from pigeon.proto.imap.dates import parse_datetime
from pigeon.proto.imap.reader import LIST_CHARS, Reader
from pigeon.proto.imap.seqset import SeqSet

STATUS_ITEMS: Final = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "DELETED"}
)
LIST_SELECTION: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
#: Longest LIST/LSUB reference or pattern, in octets as sent. A mailbox name is at most 255
#: octets (``store.mailbox.folders.NAME_MAX``); a pattern that can match one needs at most twice
#: that (a wildcard beside every character), and modified UTF-7 makes non-ASCII names longer on
#: the wire (RFC 3501 §5.1.3). 1024 leaves room for all of it. No RFC sets a number.
MAX_LIST_PATTERN: Final = 1024
#: Most patterns in one LIST (RFC 5258 §3 allows a list and sets no number; its examples use
#: two or three, and clients send one). 16 bounds one LIST's matching over the largest account
#: (2000 names of 255 octets, ``store.mailbox.MAX_FOLDERS`` + ``MAX_SUBSCRIPTIONS``) to under a
#: second of CPU in the worst case, spent in a worker thread.
MAX_LIST_PATTERNS: Final = 16
#: RFC 6154 §2 use-attr values accepted by CREATE (USE (...)).
SPECIAL_USE: Final = {
    a.upper(): a for a in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}


def select(r: Reader, tag: str, readonly: bool) -> Select:
    r.sp()
    name = args.mailbox(r)
    condstore = False
    qresync: QresyncParams | None = None
    if r.try_sp():
        r.expect(b"(")
        while True:
            word = args.keyword_word(r)
            if word == "CONDSTORE" and not condstore:
                condstore = True
            elif word == "QRESYNC" and qresync is None:
                r.sp()
                qresync = _qresync(r)
            else:
                raise r.error(f"unknown or repeated SELECT parameter {word[:40]}")
            if not r.try_sp():
                break
        r.expect(b")")
    r.end()
    return Select(tag, name, readonly, condstore, qresync)


def _qresync(r: Reader) -> QresyncParams:
    r.expect(b"(")
    uidvalidity = r.nz_number("uidvalidity")
    r.sp()
    modseq = args.modseq(r)
    known = None
    match = None
    if r.try_sp():
        if r.peek() != 0x28:
            known = args.sequence_set(r, allow_saved=False)
            if r.try_sp():
                match = _seq_match(r)
        else:
            match = _seq_match(r)
    r.expect(b")")
    return QresyncParams(uidvalidity, modseq, known, match)


def _seq_match(r: Reader) -> tuple[SeqSet, SeqSet]:
    r.expect(b"(")
    seqs = args.sequence_set(r, allow_saved=False)
    r.sp()
    uids = args.sequence_set(r, allow_saved=False)
    r.expect(b")")
    return seqs, uids


def create(r: Reader, tag: str) -> Create:
    r.sp()
    name = args.mailbox(r)
    uses: list[str] = []
    if r.try_sp():
        r.expect(b"(")
        r.expect(b"USE")
        r.sp()

        def use_attr() -> str:
            r.expect(b"\\")
            a = "\\" + r.atom("special-use attribute")
            if a.upper() not in SPECIAL_USE:
                raise r.error(f"unknown special-use attribute {a[:40]}")
            return SPECIAL_USE[a.upper()]

        uses = r.paren_list(use_attr)
        r.expect(b")")
    r.end()
    return Create(tag, name, tuple(uses))


def one_mailbox(r: Reader) -> str:
    r.sp()
    name = args.mailbox(r)
    r.end()
    return name


def delete(r: Reader, tag: str) -> Delete:
    return Delete(tag, one_mailbox(r))


def subscribe(r: Reader, tag: str) -> Subscribe:
    return Subscribe(tag, one_mailbox(r))


def unsubscribe(r: Reader, tag: str) -> Unsubscribe:
    return Unsubscribe(tag, one_mailbox(r))


def rename(r: Reader, tag: str) -> Rename:
    r.sp()
    old = args.mailbox(r)
    r.sp()
    new = args.mailbox(r)
    r.end()
    return Rename(tag, old, new)


def _list_mailbox(r: Reader) -> str:
    """RFC 3501 §9 list-mailbox: 1*list-char / string (rule 2: at most MAX_LIST_PATTERN octets)."""
    c = r.peek()
    if c == 0x22 or c == 0x7B:
        b = r.string()
    else:
        b = r.run(LIST_CHARS)
        if not b:
            raise r.error("expected a mailbox pattern")
    if len(b) > MAX_LIST_PATTERN:
        raise r.error(f"mailbox pattern longer than {MAX_LIST_PATTERN} octets")
    return r.text_utf8(b, "mailbox pattern")


def _reference(r: Reader) -> str:
    b = r.astring("reference")
    if len(b) > MAX_LIST_PATTERN:
        raise r.error(f"reference longer than {MAX_LIST_PATTERN} octets")
    return r.text_utf8(b, "reference")


def _status_items(r: Reader) -> tuple[str, ...]:
    def item() -> str:
        word = args.keyword_word(r)
        if word not in STATUS_ITEMS:
            raise r.error(f"unknown STATUS item {word[:40]}")
        return word

    return tuple(r.paren_list(item, allow_empty=False))


def list_(r: Reader, tag: str) -> List:
    r.sp()
    selection: set[str] = set()
    extended = False
    if r.peek() == 0x28:  # RFC 5258 list-select-opts
        extended = True

        def sel() -> str:
            word = args.keyword_word(r)
            if word not in LIST_SELECTION:
                raise r.error(f"unknown LIST selection option {word[:40]}")
            return word

        selection = set(r.paren_list(sel))
        if selection == {"RECURSIVEMATCH"} or ("RECURSIVEMATCH" in selection and selection <= {"RECURSIVEMATCH", "REMOTE"}):
            raise r.error("RECURSIVEMATCH needs another selection option")  # RFC 5258 §3
        r.sp()
    reference = _reference(r)
    r.sp()
    if r.peek() == 0x28:
        extended = True
        patterns = tuple(r.paren_list(lambda: _list_mailbox(r), allow_empty=False))
        if len(patterns) > MAX_LIST_PATTERNS:
            raise r.error(f"more than {MAX_LIST_PATTERNS} mailbox patterns")
    else:
        patterns = (_list_mailbox(r),)
    ret_sub = ret_children = ret_special = False
    ret_status: tuple[str, ...] | None = None
    if r.try_sp():
        extended = True
        r.expect(b"RETURN")
        r.sp()

        def ret_opt() -> str:
            nonlocal ret_sub, ret_children, ret_special, ret_status
            word = args.keyword_word(r)
            if word == "SUBSCRIBED":
                ret_sub = True
            elif word == "CHILDREN":
                ret_children = True
            elif word == "SPECIAL-USE":
                ret_special = True
            elif word == "STATUS":
                r.sp()
                ret_status = _status_items(r)
            else:
                raise r.error(f"unknown LIST return option {word[:40]}")
            return word

        r.paren_list(ret_opt)
    r.end()
    return List(
        tag,
        reference,
        patterns,
        frozenset(selection),
        ret_sub,
        ret_children,
        ret_special,
        ret_status,
        extended,
    )


def lsub(r: Reader, tag: str) -> Lsub:
    r.sp()
    reference = _reference(r)
    r.sp()
    pattern = _list_mailbox(r)
    r.end()
    return Lsub(tag, reference, pattern)


def status(r: Reader, tag: str) -> Status:
    r.sp()
    name = args.mailbox(r)
    r.sp()
    items = _status_items(r)
    r.end()
    return Status(tag, name, items)


def append(r: Reader, tag: str) -> Append:
    r.sp()
    name = args.mailbox(r)
    r.sp()
    messages = [_append_message(r)]
    while r.try_sp():
        messages.append(_append_message(r))
    r.end()
    return Append(tag, name, tuple(messages))


def _append_message(r: Reader) -> AppendMessage:
    flags: tuple[str, ...] = ()
    when = None
    if r.peek() == 0x28:
        flags = args.flag_list(r)
        r.sp()
    if r.peek() == 0x22:
        text = r.quoted()
        try:
            when = parse_datetime(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as e:
            raise r.error(f"bad date-time: {e}") from None
        r.sp()
    if r.peek_is(b"UTF8 "):  # RFC 6855 §4: UTF8 SP "(" literal8 ")"
        r.pos += 5
        r.expect(b"(")
        data, _ = r.message_literal(allow_binary=True)
        r.expect(b")")
        return AppendMessage(flags, when, data, True, True)
    data, binary = r.message_literal(allow_binary=True)
    return AppendMessage(flags, when, data, binary)
