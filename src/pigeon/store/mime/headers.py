"""Header blocks: where a header ends, its fields, unfolding, RFC 2047 decoding.

Rules:
1. A header block ends at its first empty line (RFC 5322 §2.1) and *includes* that empty line,
   because IMAP ``BODY[HEADER]`` and ``BODY[n.MIME]`` do (RFC 3501 §6.4.5). CRLF is the norm;
   a bare LF line end is accepted too (``\\n\\n`` and ``\\n\\r\\n`` also end a header).
2. A span with no empty line at all is all header; its body is empty.
3. A field is ``name ":" value`` at the start of a line plus the continuation lines that begin
   with SP or HTAB (RFC 5322 §2.2.3). Other lines (garbage, an mbox ``From `` line) are skipped.
4. Unfolding removes the line breaks inside a field and keeps the whitespace that followed them
   (RFC 5322 §2.2.3); values are returned without leading/trailing whitespace.
5. Field names are matched case-insensitively (RFC 5322 §1.2.2); the first occurrence wins for
   single-valued lookups.
6. Nothing here raises on any input: 8-bit bytes are kept as they are, undecodable encoded words
   are decoded with replacement characters.

What can go wrong: nothing raises; malformed encoded words are left as literal text.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pigeon.store.mime.decode import decode_base64, decode_charset

# RFC 5322 §2.2: field-name = 1*ftext (printable US-ASCII except ":"); 8-bit names are tolerated.
_FIELD_RE = re.compile(rb"^([^\x00-\x20\x7f:]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)\n?", re.M)
# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD_RE = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_QP_HEX_RE = re.compile(rb"=([0-9A-Fa-f]{2})")


def find_body_start(data: bytes, start: int, end: int) -> int:
    """Offset just after the empty line that ends the header at ``data[start:end]`` (rule 1, 2)."""
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    crlf = data.find(b"\n\r\n", start, end)
    # Look for a bare-LF blank line only before the first CRLF one, so that a CRLF message
    # never costs a scan of its whole body.
    lf = data.find(b"\n\n", start, crlf + 2 if crlf >= 0 else end)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return end


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3 unfolding plus whitespace trimming (rule 4)."""
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return value.strip(b" \t\r")


class HeaderField(NamedTuple):
    name: str  # lower-cased field name
    start: int  # offset of the field's first byte within the block
    end: int  # offset after the field's last line end within the block
    value_start: int  # offset after the colon within the block
    value_end: int  # offset of the value's end (before the final line end) within the block


class Headers:
    """One parsed header block (a copy of its bytes; fields parsed on first use)."""

    __slots__ = ("block", "_fields", "_index")

    def __init__(self, block: bytes) -> None:
        self.block = block
        self._fields: list[HeaderField] | None = None
        self._index: dict[str, list[int]] | None = None

    @classmethod
    def of_message(cls, data: bytes) -> Headers:
        """The header block of a whole message (or of a header-only block)."""
        return cls(data[: find_body_start(data, 0, len(data))])

    @property
    def fields(self) -> list[HeaderField]:
        if self._fields is None:
            fields: list[HeaderField] = []
            for m in _FIELD_RE.finditer(self.block):
                name = m.group(1).decode("latin-1").lower()
                fields.append(HeaderField(name, m.start(), m.end(), m.start(2), m.end(2)))
            self._fields = fields
        return self._fields

    def _lookup(self, name: str) -> list[int]:
        if self._index is None:
            index: dict[str, list[int]] = {}
            for i, f in enumerate(self.fields):
                index.setdefault(f.name, []).append(i)
            self._index = index
        return self._index.get(name.lower(), [])

    def has(self, name: str) -> bool:
        return bool(self._lookup(name))

    def value(self, field: HeaderField) -> bytes:
        return unfold(self.block[field.value_start : field.value_end])

    def get(self, name: str) -> bytes | None:
        """Unfolded value of the first ``name`` field, or None when absent (rule 5)."""
        found = self._lookup(name)
        if not found:
            return None
        return self.value(self.fields[found[0]])

    def get_all(self, name: str) -> list[bytes]:
        fields = self.fields
        return [self.value(fields[i]) for i in self._lookup(name)]

    def raw_field(self, field: HeaderField) -> bytes:
        """The field exactly as it appears, folding and line end included."""
        return self.block[field.start : field.end]


def _decode_8bit(raw: bytes) -> str:
    """Raw header text: UTF-8 (RFC 6532) when it is valid, else Latin-1 (never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode_word_payload(encoding: bytes, text: bytes) -> bytes:
    if encoding in (b"b", b"B"):
        return decode_base64(text)
    # RFC 2047 §4.2: "_" is SP, "=XX" is a hex octet.
    text = text.replace(b"_", b" ")
    return _QP_HEX_RE.sub(lambda m: bytes([int(m.group(1), 16)]), text)


def decode_words(value: bytes) -> str:
    """Decode RFC 2047 encoded words in ``value``; other text is read by ``_decode_8bit``.

    RFC 2047 §6.2: whitespace between two adjacent encoded words is dropped. Adjacent words in
    the same charset are joined before charset decoding, so a character split across two words
    (common with UTF-8 and B encoding) survives.
    """
    if b"=?" not in value:
        return _decode_8bit(value)
    out: list[str] = []
    pending = b""
    pending_charset = ""
    pos = 0
    for m in _ENCODED_WORD_RE.finditer(value):
        between = value[pos : m.start()]
        adjacent = pos > 0 and not between.strip(b" \t")
        charset = m.group(1).decode("ascii", "replace").split("*", 1)[0].lower()  # RFC 2231 §5
        payload = _decode_word_payload(m.group(2), m.group(3))
        if not adjacent or charset != pending_charset:
            if pending:
                out.append(decode_charset(pending, pending_charset))
                pending = b""
            if not adjacent:
                out.append(_decode_8bit(between))
        pending += payload
        pending_charset = charset
        pos = m.end()
    if pending:
        out.append(decode_charset(pending, pending_charset))
    out.append(_decode_8bit(value[pos:]))
    return "".join(out)
