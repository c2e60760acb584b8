"""Parser of SEARCH and UID SEARCH: the full key tree of RFC 3501 §6.4.4, MODSEQ (RFC 7162
§3.1.5), ``$`` (RFC 5182), ESEARCH return options (RFC 4731, core in RFC 9051 §6.4.4).

Rules:
1. ``SEARCH [RETURN (opts)] [CHARSET name] key *(SP key)``. The top level is an implicit AND.
   ``RETURN ()`` means ``RETURN (ALL)`` (RFC 4731 §3.1); options are MIN MAX ALL COUNT SAVE.
2. Charsets: US-ASCII and UTF-8 are supported (RFC 3501 §6.4.4 requires both); strings are
   decoded from UTF-8 (a superset of US-ASCII). Any other charset raises ``CharsetError`` once
   the command has parsed (the session answers ``NO [BADCHARSET (US-ASCII UTF-8)]``).
3. NEW is RECENT UNSEEN; OLD is NOT RECENT (RFC 3501 §6.4.4); they are expressed with
   ``SearchFlag("\\Recent")``.
4. NOT, OR and parentheses nest at most ``reader.MAX_DEPTH`` deep: ``NOT NOT NOT ...`` is a
   ``ParseError``, never a RecursionError.
5. A group ``()`` must not be empty (RFC 3501 §9: ``"(" search-key *(SP search-key) ")"``).
"""

from __future__ import annotations

from typing import Final, Literal

from pigeon.proto.imap import args
from pigeon.proto.imap.commands import (
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchKey,
    SearchModseq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
)
from pigeon.proto.imap.errors import CharsetError
from pigeon.proto.imap.reader import MAX_NUMBER64, Reader

SUPPORTED_CHARSETS: Final = frozenset({"UTF-8", "US-ASCII"})
RETURN_OPTIONS: Final = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})

_FLAG_KEYS: Final = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "OLD": ("\\Recent", False),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS: Final = frozenset({"BCC", "CC", "FROM", "SUBJECT", "TO"})
_DATE_KEYS: Final[dict[str, tuple[bool, Literal["BEFORE", "ON", "SINCE"]]]] = {
    "BEFORE": (False, "BEFORE"),
    "ON": (False, "ON"),
    "SINCE": (False, "SINCE"),
    "SENTBEFORE": (True, "BEFORE"),
    "SENTON": (True, "ON"),
    "SENTSINCE": (True, "SINCE"),
}
_SEQ_START: Final = frozenset(b"0123456789*$")


def search(r: Reader, tag: str, uid: bool) -> Search:
    r.sp()
    return_opts: tuple[str, ...] | None = None
    if r.peek_is(b"RETURN "):
        r.pos += 7

        def opt() -> str:
            word = args.keyword_word(r)
            if word not in RETURN_OPTIONS:
                raise r.error(f"unknown SEARCH return option {word[:40]}")
            return word

        opts = r.paren_list(opt)
        return_opts = tuple(dict.fromkeys(opts)) if opts else ("ALL",)  # RFC 4731 §3.1
        r.sp()
    charset = None
    if r.peek_is(b"CHARSET "):
        r.pos += 8
        raw = r.quoted() if r.peek() == 0x22 else r.atom("charset").encode("ascii")
        charset = raw.decode("ascii", "replace").upper()
        r.sp()
    keys = [key(r)]
    while r.try_sp():
        keys.append(key(r))
    r.end()
    if charset is not None and charset not in SUPPORTED_CHARSETS:
        raise CharsetError(charset, tag)
    return Search(tag, uid, SearchAnd(tuple(keys)), charset, return_opts)


def _text(r: Reader) -> str:
    return args.utf8_astring(r, "search string")


def key(r: Reader) -> SearchKey:
    c = r.peek()
    if c == 0x28:  # "("
        return SearchAnd(tuple(r.paren_list(lambda: key(r), allow_empty=False)))
    if c is not None and c in _SEQ_START:
        return SearchSet(args.sequence_set(r))
    word = args.keyword_word(r)
    if word == "ALL":
        return SearchAll()
    if word in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[word]
        return SearchFlag(flag, present)
    if word == "NEW":
        return SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False)))
    if word in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        return SearchFlag(r.atom("keyword"), word == "KEYWORD")
    if word in _HEADER_KEYS:
        r.sp()
        return SearchHeader(word, _text(r))
    if word == "HEADER":
        r.sp()
        field = args.utf8_astring(r, "header field name").upper()
        r.sp()
        return SearchHeader(field, _text(r))
    if word in ("BODY", "TEXT"):
        r.sp()
        return SearchText("BODY" if word == "BODY" else "TEXT", _text(r))
    if word in _DATE_KEYS:
        sent, op = _DATE_KEYS[word]
        r.sp()
        return SearchDate(sent, op, args.date(r))
    if word in ("LARGER", "SMALLER"):
        r.sp()
        size = r.number(MAX_NUMBER64, "size")  # RFC 9051 §9: number64
        return SearchSize("LARGER" if word == "LARGER" else "SMALLER", size)
    if word == "UID":
        r.sp()
        return SearchSet(args.sequence_set(r), uid=True)
    if word == "NOT":
        r.sp()
        r.enter()
        inner = key(r)
        r.leave()
        return SearchNot(inner)
    if word == "OR":
        r.sp()
        r.enter()
        left = key(r)
        r.sp()
        right = key(r)
        r.leave()
        return SearchOr(left, right)
    if word == "MODSEQ":
        return _modseq(r)
    raise r.error(f"unknown search key {word[:40]}")


def _modseq(r: Reader) -> SearchModseq:
    """MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer (RFC 7162 §3.1.5)."""
    r.sp()
    entry = entry_type = None
    if r.peek() == 0x22:
        entry = r.text_utf8(r.quoted(), "entry name")
        if not entry.lower().startswith("/flags/"):
            raise r.error("MODSEQ entry must be /flags/<flag>")
        r.sp()
        entry_type = args.keyword_word(r).lower()
        if entry_type not in ("priv", "shared", "all"):
            raise r.error("MODSEQ entry type must be priv, shared or all")
        r.sp()
    return SearchModseq(args.modseq(r, allow_zero=True), entry, entry_type)
