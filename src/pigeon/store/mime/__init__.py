"""Message structure for IMAP: the MIME part tree, ENVELOPE, BODYSTRUCTURE, sections, SEARCH.

Pure code over ``bytes`` (a whole message with CRLF line ends); no I/O. See ``parts`` for the
tree, ``imapview`` for FETCH data, ``search`` for SEARCH matching.
"""

from __future__ import annotations

from pigeon.store.mime.addresses import EnvelopeAddress, parse_address_list
from pigeon.store.mime.decode import decode_charset, decode_cte
from pigeon.store.mime.headers import Headers, decode_words
from pigeon.store.mime.imapview import (
    NoSuchPart,
    SectionKind,
    binary,
    binary_size,
    bodystructure,
    envelope,
    partial,
    section,
)
from pigeon.store.mime.parts import MAX_NESTING, MAX_PARTS, Message, Part, find_part, parse_message
from pigeon.store.mime.search import (
    body_contains,
    body_texts,
    header_contains,
    header_values,
    sent_date,
    text_contains,
    values_contain,
)

__all__ = [
    "MAX_NESTING",
    "MAX_PARTS",
    "EnvelopeAddress",
    "Headers",
    "Message",
    "NoSuchPart",
    "Part",
    "SectionKind",
    "binary",
    "binary_size",
    "body_contains",
    "body_texts",
    "bodystructure",
    "decode_charset",
    "decode_cte",
    "decode_words",
    "envelope",
    "find_part",
    "header_contains",
    "header_values",
    "parse_address_list",
    "parse_message",
    "partial",
    "section",
    "sent_date",
    "text_contains",
    "values_contain",
]
