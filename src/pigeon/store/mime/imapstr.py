"""IMAP string atoms for FETCH data: quoted strings, literals, NIL (RFC 3501 §4.3, §9).

Rules:
1. A value is sent as a quoted string when every byte is a TEXT-CHAR (no NUL, CR, LF) and it is
   7-bit — or, for a client that enabled UTF8=ACCEPT, valid UTF-8 (RFC 6855 §3, RFC 9051 §4.3).
   ``"`` and ``\\`` are escaped (RFC 3501 quoted-specials). Otherwise it is a literal
   ``{n}\\r\\n`` followed by exactly n octets.
2. NUL cannot appear in a string or literal (RFC 3501 CHAR8 excludes %x00), so it is removed.
3. Human-readable header text (Subject, display names) with 8-bit bytes is, for a client without
   UTF8=ACCEPT, re-encoded as RFC 2047 ``=?utf-8?b?...?=`` words when it is valid UTF-8 (what a
   legacy client can decode and display), and sent as a literal of the raw bytes when it is not
   (nothing better is known about its charset). Machine fields (addresses, dates, ids) with
   8-bit bytes are always sent raw, quoted for UTF8=ACCEPT clients, else as literals.
"""

from __future__ import annotations

import base64
import re

NIL = b"NIL"
_QUOTABLE_RE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_PLAIN_RE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]*")  # no escapes needed
_NO_CTL_RE = re.compile(rb"[^\x00\r\n]*")
# RFC 2047 §2: an encoded word is at most 75 characters; "=?utf-8?b?" + "?=" take 12, leaving
# 63, so 60 base64 characters, which carry 45 octets.
_WORD_OCTETS = 45


def _quote(value: bytes) -> bytes:
    if b"\\" in value or b'"' in value:
        value = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + value + b'"'


def literal(value: bytes) -> bytes:
    return b"{%d}\r\n" % len(value) + value


def string(value: bytes, utf8: bool = False) -> bytes:
    """An IMAP string for ``value``, quoted when safe, else a literal (rules 1, 2)."""
    if _PLAIN_RE.fullmatch(value) is not None:
        return b'"' + value + b'"'
    if b"\x00" in value:
        value = value.replace(b"\x00", b"")
    if _QUOTABLE_RE.fullmatch(value) is not None:
        return _quote(value)
    if utf8 and _NO_CTL_RE.fullmatch(value) is not None and _is_utf8(value):
        return _quote(value)
    return literal(value)


def nstring(value: bytes | None, utf8: bool = False) -> bytes:
    return NIL if value is None else string(value, utf8)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def encode_words(text: str) -> bytes:
    """``text`` as RFC 2047 B-encoded UTF-8 words separated by single spaces."""
    words: list[bytes] = []
    chunk = bytearray()
    for ch in text:
        b = ch.encode("utf-8", "surrogatepass")
        if len(chunk) + len(b) > _WORD_OCTETS:
            words.append(b"=?utf-8?b?" + base64.b64encode(bytes(chunk)) + b"?=")
            chunk.clear()
        chunk += b
    if chunk or not words:
        words.append(b"=?utf-8?b?" + base64.b64encode(bytes(chunk)) + b"?=")
    return b" ".join(words)


def text_nstring(value: bytes | None, utf8: bool = False) -> bytes:
    """nstring for human-readable header text (rule 3)."""
    if value is None:
        return NIL
    if not utf8 and not value.isascii() and b"\x00" not in value:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return literal(value)
        return string(encode_words(text))
    return string(value, utf8)
