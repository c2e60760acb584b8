"""What IMAP FETCH shows of a message: ENVELOPE, BODY/BODYSTRUCTURE, BODY[section], BINARY.

Each function returns the exact bytes that follow the item name in a FETCH response
(``ENVELOPE <here>``, ``BODYSTRUCTURE <here>``), or the section content the server wraps as a
literal itself.

Rules:
1. ENVELOPE follows RFC 3501 §7.4.2: ``(date subject from sender reply-to to cc bcc in-reply-to
   message-id)``; an absent header is NIL, an empty one ``""``; Sender and Reply-To that are
   absent or empty take the value of From (RFC 3501 §7.4.2); address lists are NIL when empty.
   Header text is not decoded (the client decodes RFC 2047); 8-bit text follows ``imapstr``.
2. BODYSTRUCTURE follows the RFC 3501 §9 ``body`` grammar: children of a multipart follow one
   another with no space; non-extensible BODY omits all extension data (RFC 3501 §7.4.2).
   Extension data is always given in full (md5/params, disposition, language, location).
   A multipart without any child is shown with one empty text/plain child, as Dovecot does,
   because the grammar requires ``1*body``. Opaque parts (``parts`` rule 4) are
   application/octet-stream. Only message/rfc822 is shown as an encapsulated message
   (body-type-msg); message/global (RFC 9051) is shown as a basic part.
3. Sections (RFC 3501 §6.4.5): an empty part path means the whole message; HEADER, TEXT and
   HEADER.FIELDS[.NOT] after a part number apply to a message/rfc822 part's embedded message and
   give None for any other part; MIME needs a part number (ValueError otherwise — the command
   parser must have rejected it). A part that does not exist gives None (the server sends NIL).
   HEADER.FIELDS keeps the fields in message order, each as written (folds included), and ends
   with the empty line.
4. BINARY (RFC 3516 §4.2): the part content with its transfer encoding removed; None for an
   unknown encoding (the server answers ``NO [UNKNOWN-CTE]``); ``NoSuchPart`` for a bad path.
"""

from __future__ import annotations

from typing import Literal

from pigeon.store.mime.addresses import EnvelopeAddress, parse_address_list
from pigeon.store.mime.decode import decode_cte
from pigeon.store.mime.headers import Headers
from pigeon.store.mime.imapstr import NIL, nstring, string, text_nstring
from pigeon.store.mime.params import Params
from pigeon.store.mime.parts import Message, Part, find_part

SectionKind = Literal["", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"]

# Dovecot's EMPTY_BODYSTRUCTURE, used for a multipart with no parts (rule 2).
_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'


class NoSuchPart(LookupError):
    """The section path names no part of this message."""


def _headers_of(msg: Message | Headers | bytes) -> Headers:
    if isinstance(msg, Message):
        return msg.headers
    if isinstance(msg, Headers):
        return msg
    return Headers.of_message(msg)


# ---------------------------------------------------------------- ENVELOPE


def _address(a: EnvelopeAddress, utf8: bool) -> bytes:
    return b"(%s %s %s %s)" % (
        text_nstring(a.name, utf8),
        nstring(a.route, utf8),
        nstring(a.mailbox, utf8),
        nstring(a.host, utf8),
    )


def _address_list(h: Headers, name: str) -> list[EnvelopeAddress]:
    value = h.get(name)
    return [] if value is None else parse_address_list(value)


def _render_addresses(addrs: list[EnvelopeAddress], utf8: bool) -> bytes:
    if not addrs:
        return NIL
    return b"(" + b"".join(_address(a, utf8) for a in addrs) + b")"


def envelope(msg: Message | Headers | bytes, utf8: bool = False) -> bytes:
    """ENVELOPE of a parsed message, a header block, or raw message/header bytes (rule 1).

    Only the header is read, so ``Mailbox.read_header`` output is enough.
    """
    h = _headers_of(msg)
    from_ = _address_list(h, "from")
    sender = _address_list(h, "sender") or from_  # RFC 3501 §7.4.2
    reply_to = _address_list(h, "reply-to") or from_  # RFC 3501 §7.4.2
    return b"(%s)" % b" ".join(
        (
            nstring(h.get("date"), utf8),
            text_nstring(h.get("subject"), utf8),
            _render_addresses(from_, utf8),
            _render_addresses(sender, utf8),
            _render_addresses(reply_to, utf8),
            _render_addresses(_address_list(h, "to"), utf8),
            _render_addresses(_address_list(h, "cc"), utf8),
            _render_addresses(_address_list(h, "bcc"), utf8),
            nstring(h.get("in-reply-to"), utf8),
            nstring(h.get("message-id"), utf8),
        )
    )


# ---------------------------------------------------------------- BODYSTRUCTURE


def _params(params: Params, utf8: bool) -> bytes:
    if not params:
        return NIL
    return b"(" + b" ".join(string(k.encode("ascii", "replace")) + b" " + string(v, utf8) for k, v in params) + b")"


def _extension_tail(part: Part, utf8: bool) -> bytes:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc (shared by both part kinds)."""
    if part.disposition is None:
        dsp = NIL
    else:
        dsp = b"(%s %s)" % (string(part.disposition[0].encode("ascii")), _params(part.disposition[1], utf8))
    if part.language:
        lang = b"(" + b" ".join(string(t) for t in part.language) + b")"
    else:
        lang = NIL
    return b"%s %s %s" % (dsp, lang, nstring(part.location, utf8))


def _body(part: Part, extensible: bool, utf8: bool) -> bytes:
    if part.is_multipart:
        kids = b"".join(_body(c, extensible, utf8) for c in part.children) or _EMPTY_BODY
        out = kids + b" " + string(part.subtype.encode("ascii"))
        if extensible:
            out += b" " + _params(part.params, utf8) + b" " + _extension_tail(part, utf8)
        return b"(" + out + b")"
    type_, subtype = ("application", "octet-stream") if part.opaque else (part.type, part.subtype)
    out = b"%s %s %s %s %s %s %d" % (
        string(type_.encode("ascii")),
        string(subtype.encode("ascii")),
        _params(part.params, utf8),
        nstring(part.content_id, utf8),
        text_nstring(part.description, utf8),
        string(part.cte.encode("ascii")),
        part.size,
    )
    if part.message is not None:
        out += b" %s %s %d" % (
            envelope(part.message, utf8),
            _body(part.message.root, extensible, utf8),
            part.lines,
        )
    elif type_ == "text":
        out += b" %d" % part.lines
    if extensible:
        out += b" " + nstring(part.md5, utf8) + b" " + _extension_tail(part, utf8)
    return b"(" + out + b")"


def bodystructure(msg: Message, extensible: bool = True, utf8: bool = False) -> bytes:
    """BODYSTRUCTURE (``extensible=True``) or BODY (``False``) of ``msg`` (rule 2)."""
    return _body(msg.root, extensible, utf8)


# ---------------------------------------------------------------- sections


def _select_fields(h: Headers, names: tuple[str, ...], keep: bool) -> bytes:
    wanted = {n.lower() for n in names}
    out = bytearray()
    for f in h.fields:
        if (f.name in wanted) == keep:
            raw = h.raw_field(f)
            out += raw
            if not raw.endswith(b"\n"):
                out += b"\r\n"
    out += b"\r\n"  # RFC 3501 §6.4.5: the blank line is included
    return bytes(out)


def section(
    msg: Message, part: tuple[int, ...] = (), kind: SectionKind = "", fields: tuple[str, ...] = ()
) -> bytes | None:
    """Content of ``BODY[<part>.<kind> (<fields>)]``; None when there is no such part (rule 3)."""
    target: Message
    if not part:
        if kind == "MIME":
            raise ValueError("MIME requires a part number (RFC 3501 §6.4.5)")
        if kind == "":
            return msg.data[msg.start : msg.end]
        target = msg
    else:
        p = find_part(msg, part)
        if p is None:
            return None
        if kind == "":
            return p.body
        if kind == "MIME":
            return p.header
        if p.message is None:
            return None  # RFC 3501 §6.4.5: only for a part of type MESSAGE/RFC822
        target = p.message
    if kind == "HEADER":
        return target.header
    if kind == "TEXT":
        return target.body
    return _select_fields(target.headers, fields, kind == "HEADER.FIELDS")


def partial(data: bytes, origin: int, count: int) -> bytes:
    """``<origin.count>`` slice (RFC 3501 §6.4.5): empty when origin is past the end."""
    if origin < 0 or count < 0:
        raise ValueError("partial origin and count are non-negative numbers")
    return data[origin : origin + count]


def _binary_part(msg: Message, part: tuple[int, ...]) -> Part:
    p = find_part(msg, part)
    if p is None:
        raise NoSuchPart(".".join(map(str, part)))
    return p


def binary(msg: Message, part: tuple[int, ...] = ()) -> bytes | None:
    """``BINARY[<part>]`` content: transfer encoding removed; None = unknown CTE (rule 4)."""
    if not part:
        return msg.data[msg.start : msg.end]  # RFC 3516 §4.2: the whole message, unchanged
    p = _binary_part(msg, part)
    return decode_cte(p.body, p.cte)


def binary_size(msg: Message, part: tuple[int, ...] = ()) -> int | None:
    """``BINARY.SIZE[<part>]`` (RFC 3516 §4.2); None = unknown CTE."""
    data = binary(msg, part)
    return None if data is None else len(data)
