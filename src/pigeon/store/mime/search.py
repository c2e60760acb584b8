"""Matching helpers for IMAP SEARCH keys that look inside messages (RFC 3501 §6.4.4).

Rules:
1. String matches are case-insensitive substring matches (RFC 3501 §6.4.4), done on text:
   both sides are Unicode-casefolded.
2. Header keys (HEADER, FROM, TO, CC, BCC, SUBJECT) match the decoded field value: RFC 2047
   encoded words decoded, raw 8-bit read as UTF-8 (RFC 6532) or else Latin-1. An empty needle
   matches every message that has the field (RFC 3501 §6.4.4 HEADER). These accept raw header
   bytes, so a server can answer them from the header alone (the fast path).
3. BODY matches the decoded text of every text/* part, those inside attached messages included:
   transfer encoding removed (base64, QP), then the charset decoded. Parts in an unknown
   transfer encoding are matched raw. Non-text parts (attachments) are not searched.
4. TEXT matches the header (each field as ``name: decoded value``) or the BODY text.
5. ``sent_date`` is the calendar date written in the Date: field, disregarding time and zone
   (RFC 3501 §6.4.4 SENTBEFORE/SENTON/SENTSINCE); None when it is absent or unparseable.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
from collections.abc import Iterator, Sequence

from pigeon.store.mime.decode import decode_charset, decode_cte
from pigeon.store.mime.headers import Headers, decode_words
from pigeon.store.mime.parts import Message, Part, parse_message

log = logging.getLogger(__name__)


def _headers_of(msg: Message | Headers | bytes) -> Headers:
    if isinstance(msg, Message):
        return msg.headers
    if isinstance(msg, Headers):
        return msg
    return Headers.of_message(msg)


def _message_of(msg: Message | bytes) -> Message:
    return msg if isinstance(msg, Message) else parse_message(msg)


def header_values(msg: Message | Headers | bytes, field: str) -> list[str]:
    """The decoded values of every ``field`` header (what ``header_contains`` searches; the
    IMAP session caches them per message, ``imapd.search``)."""
    return [decode_words(v) for v in _headers_of(msg).get_all(field)]


def values_contain(values: Sequence[str], needle: str) -> bool:
    """Rule 2 over ``header_values``: some value contains ``needle``, case-insensitively."""
    if not values:
        return False
    folded = needle.casefold()
    return not folded or any(folded in v.casefold() for v in values)


def header_contains(msg: Message | Headers | bytes, field: str, needle: str) -> bool:
    """Some ``field`` header's decoded value contains ``needle`` (rule 2)."""
    return values_contain(header_values(msg, field), needle)


def _header_text(h: Headers) -> str:
    return "\n".join(f"{f.name}: {decode_words(h.value(f))}" for f in h.fields)


def _part_texts(part: Part) -> Iterator[str]:
    if part.is_multipart:
        for child in part.children:
            yield from _part_texts(child)
    elif part.message is not None:
        yield from _part_texts(part.message.root)
    elif part.type == "text" and not part.opaque:
        body = part.body
        decoded = decode_cte(body, part.cte)
        yield decode_charset(body if decoded is None else decoded, part.param("charset"))


def body_texts(msg: Message | bytes) -> Iterator[str]:
    """Decoded text of each text/* part, in message order (rule 3)."""
    return _part_texts(_message_of(msg).root)


def body_contains(msg: Message | bytes, needle: str) -> bool:
    folded = needle.casefold()
    return any(folded in text.casefold() for text in body_texts(msg))


def text_contains(msg: Message | bytes, needle: str) -> bool:
    """TEXT key: header or body contains ``needle`` (rule 4)."""
    m = _message_of(msg)
    if needle.casefold() in _header_text(m.headers).casefold():
        return True
    return body_contains(m, needle)


def sent_date(msg: Message | Headers | bytes) -> datetime.date | None:
    """Date written in the Date: field, time and zone disregarded (rule 5)."""
    raw = _headers_of(msg).get("date")
    if raw is None:
        return None
    parsed = email.utils.parsedate_tz(raw.decode("latin-1"))
    if parsed is None:
        return None
    try:
        return datetime.date(parsed[0], parsed[1], parsed[2])
    except (ValueError, TypeError):
        log.debug("Date: field names no calendar day: %r", raw[:100])
        return None
