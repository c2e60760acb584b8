"""Content-Transfer-Encoding and charset decoding, lenient and total.

Rules:
1. ``decode_cte`` knows the identity encodings (7bit, 8bit, binary; RFC 2045 §6.2), base64
   (RFC 2045 §6.8) and quoted-printable (RFC 2045 §6.7). Any other CTE returns None, which
   IMAP BINARY reports as ``[UNKNOWN-CTE]`` (RFC 3516 §4.3).
2. Base64 decoding ignores characters outside the alphabet (RFC 2045 §6.8: "must be ignored")
   and repairs missing padding; quoted-printable decoding drops the whitespace a transport may
   have added at line ends (RFC 2045 §6.7 rule 3). Neither raises on any input.
3. ``decode_charset`` never raises: an unknown charset is read as UTF-8, undecodable bytes become
   U+FFFD. US-ASCII labelled text with 8-bit bytes is read as UTF-8 (the common mislabel).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import re

log = logging.getLogger(__name__)

_IDENTITY = frozenset({"7bit", "8bit", "binary", ""})
_B64_JUNK_RE = re.compile(rb"[^A-Za-z0-9+/]")
_QP_TRAILING_WS_RE = re.compile(rb"[ \t]+(?=\r?\n)")
_ASCII_ALIASES = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "us"})


def decode_base64(data: bytes) -> bytes:
    cleaned = _B64_JUNK_RE.sub(b"", data)
    # A lone trailing sextet cannot make an octet; drop it, then pad (rule 2).
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned)
    except binascii.Error:
        log.warning("base64 payload undecodable after cleaning (%d bytes)", len(data))
        return b""


def decode_qp(data: bytes) -> bytes:
    return binascii.a2b_qp(_QP_TRAILING_WS_RE.sub(b"", data))


def decode_cte(data: bytes, cte: str) -> bytes | None:
    """Decoded content, or None for an unknown transfer encoding (rule 1)."""
    cte = cte.lower()
    if cte in _IDENTITY:
        return data
    if cte == "base64":
        return decode_base64(data)
    if cte == "quoted-printable":
        return decode_qp(data)
    return None


def decode_charset(data: bytes, charset: str | None) -> str:
    """Text of ``data`` in ``charset`` (rule 3)."""
    name = (charset or "").strip().lower()
    if not name or name in _ASCII_ALIASES:
        name = "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    try:
        return data.decode(name, "replace")
    except (UnicodeError, TypeError, ValueError):
        # A codec that rejects the "replace" handler or bytes input (e.g. a text transform).
        log.info("charset %r unusable; reading as UTF-8", name)
        return data.decode("utf-8", "replace")
