"""RFC 5322 address lists, parsed leniently for the IMAP ENVELOPE (RFC 3501 §7.4.2).

Rules:
1. The result is a flat list of ``EnvelopeAddress`` in IMAP form: an address is
   (name, route, mailbox, host); a group starts with (NIL, NIL, group-name, NIL) and ends with
   (NIL, NIL, NIL, NIL) (RFC 3501 §7.4.2). A group left open at the end is closed.
2. The name is the display phrase (RFC 5322 §3.4) with quoted strings unquoted and runs of
   whitespace made one space; encoded words are left for the client to decode. Without a
   phrase, the comment of a bare ``addr-spec (Comment)`` is the name, as Dovecot does.
3. The route is the obsolete source route ``@a,@b`` of ``<@a,@b:user@host>`` (RFC 5322 §4.4).
4. The mailbox keeps quoted local parts quoted (so ``mailbox "@" host`` is a usable address);
   a missing domain gives an empty host, never NIL (NIL host means a group marker).
5. Anything unparseable is dropped or taken as text; parsing never raises.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class EnvelopeAddress(NamedTuple):
    name: bytes | None
    route: bytes | None
    mailbox: bytes | None
    host: bytes | None


GROUP_END = EnvelopeAddress(None, None, None, None)

_ATOM, _QUOTED, _COMMENT, _DLITERAL, _SPECIAL = range(5)
_SPECIALS = b"()<>[]:;@\\,.\""
_WS = b" \t\r\n"


class _Tok(NamedTuple):
    kind: int
    text: bytes  # atom: itself; quoted: unescaped content; comment: content; special: the byte
    raw: bytes  # as written
    space: bool  # whitespace or a comment came before it


_ATOM_RUN_RE = re.compile(rb'[^ \t\r\n()<>\[\]:;@\\,."]+')
_WS_RUN_RE = re.compile(rb"[ \t\r\n]+")
_CLOSERS = {0x22: 0x22, 0x28: 0x29, 0x5B: 0x5D}
_KINDS = {0x22: _QUOTED, 0x28: _COMMENT, 0x5B: _DLITERAL}


def _tokenize(value: bytes) -> list[_Tok]:
    toks: list[_Tok] = []
    n = len(value)
    pos = 0
    space = False
    while pos < n:
        c = value[pos]
        if c in _WS:
            m = _WS_RUN_RE.match(value, pos)
            pos = m.end() if m is not None else pos + 1
            space = True
            continue
        start = pos
        if c in _CLOSERS:  # quoted string, comment (nests), domain literal
            close = _CLOSERS[c]
            depth = 1
            out = bytearray()
            pos += 1
            while pos < n:
                d = value[pos]
                if d == 0x5C and pos + 1 < n:
                    out.append(value[pos + 1])
                    pos += 2
                    continue
                if c == 0x28 and d == 0x28:
                    depth += 1
                elif d == close:
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                out.append(d)
                pos += 1
            kind = _KINDS[c]
            toks.append(_Tok(kind, bytes(out), value[start:pos], space))
            space = kind == _COMMENT
            continue
        if c in _SPECIALS:
            pos += 1
            toks.append(_Tok(_SPECIAL, value[start:pos], value[start:pos], space))
        else:
            m = _ATOM_RUN_RE.match(value, pos)
            pos = m.end() if m is not None else pos + 1
            toks.append(_Tok(_ATOM, value[start:pos], value[start:pos], space))
        space = False
    return toks


def _phrase(toks: list[_Tok]) -> bytes | None:
    out = bytearray()
    for t in toks:
        if t.kind == _COMMENT:
            continue
        if out and t.space:
            out += b" "
        out += t.text if t.kind == _QUOTED else t.raw
    return bytes(out) if out else None


def _join_spec(toks: list[_Tok]) -> bytes:
    """Local part or domain as written, without the CFWS the obsolete syntax allows."""
    out = bytearray()
    prev: _Tok | None = None
    for t in toks:
        if t.kind == _COMMENT:
            continue
        if prev is not None and t.space and prev.kind != _SPECIAL and t.kind != _SPECIAL:
            out += b" "
        out += t.raw
        prev = t
    return bytes(out)


def _addr_spec(toks: list[_Tok]) -> tuple[bytes, bytes]:
    for i, t in enumerate(toks):
        if t.kind == _SPECIAL and t.text == b"@":
            return _join_spec(toks[:i]), _join_spec(toks[i + 1 :])
    return _join_spec(toks), b""


def _angle(name: bytes | None, inner: list[_Tok]) -> EnvelopeAddress:
    route: bytes | None = None
    if inner and inner[0].kind == _SPECIAL and inner[0].text == b"@":
        for i, t in enumerate(inner):
            if t.kind == _SPECIAL and t.text == b":":
                route = _join_spec(inner[:i])
                inner = inner[i + 1 :]
                break
    mailbox, host = _addr_spec(inner)
    return EnvelopeAddress(name, route, mailbox, host)


def _bare(pending: list[_Tok]) -> EnvelopeAddress | None:
    words = [t for t in pending if t.kind != _COMMENT]
    if not words:
        return None
    comments = [t.text.strip() for t in pending if t.kind == _COMMENT and t.text.strip()]
    mailbox, host = _addr_spec(words)
    return EnvelopeAddress(comments[-1] if comments else None, None, mailbox, host)


# Fast paths for the commonest single-address forms; they give exactly what the general parser
# gives for the same input (the tests compare both on a corpus).
_DOT_ATOM = rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\x80-\xff-]+"  # RFC 6532 §3.2: UTF-8 in atext
_BARE_RE = re.compile(rb"[ \t]*(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb")[ \t]*")
_NAMED_RE = re.compile(
    rb'[ \t]*(?:"([^"\\\r\n]*)"|([A-Za-z0-9!#$%&\'*+/=?^_`{|}~ \t\x80-\xff-]*?))[ \t]*'
    rb"<(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb")>[ \t]*"
)


_LIST_BLOCKERS = (b'"', b"(", b":", b";", b"\\")


def _fast(value: bytes) -> list[EnvelopeAddress] | None:
    m = _BARE_RE.fullmatch(value)
    if m is not None and b".." not in m.group(1):
        return [EnvelopeAddress(None, None, m.group(1), m.group(2))]
    m = _NAMED_RE.fullmatch(value)
    if m is not None:
        quoted, phrase = m.group(1), m.group(2)
        name = quoted if quoted is not None else b" ".join(phrase.split()) if phrase else None
        return [EnvelopeAddress(name or None, None, m.group(3), m.group(4))]
    return None


def parse_address_list(value: bytes) -> list[EnvelopeAddress]:
    """IMAP envelope addresses of an unfolded address-list header value (rules 1–5)."""
    fast = _fast(value)
    if fast is not None:
        return fast
    if b"," in value and not any(c in value for c in _LIST_BLOCKERS):
        # A plain comma list: no quoted string, comment, group or escape can hide a comma.
        out: list[EnvelopeAddress] = []
        for piece in value.split(b","):
            one = _fast(piece)
            if one is None:
                if piece.strip(b" \t"):
                    return _parse_general(value)
                continue
            out += one
        return out
    return _parse_general(value)


def _parse_general(value: bytes) -> list[EnvelopeAddress]:
    toks = _tokenize(value)
    out: list[EnvelopeAddress] = []
    pending: list[_Tok] = []
    in_group = False
    skip = False  # after "<...>", ignore everything up to the next "," or ";"
    i = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        i += 1
        special = t.text if t.kind == _SPECIAL else b""
        if special == b",":
            if not skip and (bare := _bare(pending)) is not None:
                out.append(bare)
            pending, skip = [], False
        elif special == b";":  # ends a group; outside one, a stray separator
            if not skip and (bare := _bare(pending)) is not None:
                out.append(bare)
            if in_group:
                out.append(GROUP_END)
            pending, skip, in_group = [], False, False
        elif skip:
            continue
        elif special == b":" and not in_group and not any(p.text == b"@" for p in pending):
            out.append(EnvelopeAddress(None, None, _phrase(pending) or b"", None))
            pending, in_group = [], True
        elif special == b"<":
            inner: list[_Tok] = []
            while i < n and not (toks[i].kind == _SPECIAL and toks[i].text == b">"):
                inner.append(toks[i])
                i += 1
            i += 1  # the ">"
            out.append(_angle(_phrase(pending), inner))
            pending, skip = [], True
        else:
            pending.append(t)
    if not skip and (bare := _bare(pending)) is not None:
        out.append(bare)
    if in_group:
        out.append(GROUP_END)
    return out
