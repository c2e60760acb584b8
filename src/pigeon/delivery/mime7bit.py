"""8-bit → 7-bit conversion for a peer without 8BITMIME (RFC 6152 §3, RFC 2045 §6).

RFC 6152 §3: a relay that got an 8-bit message and must pass it to a server without 8BITMIME
either converts it to 7-bit MIME or returns it as undeliverable. Pigeon converts.

Rules:
1. Each leaf MIME part whose body holds 8-bit octets is re-encoded: ``text/*`` as
   quoted-printable, anything else as base64 (RFC 2045 §6.7, §6.8); its
   ``Content-Transfer-Encoding`` header is replaced. Parts that are already 7-bit are untouched.
2. A ``message/*`` or ``multipart/*`` part declared ``8bit``/``binary`` is relabelled ``7bit``
   once its children are converted (RFC 2045 §6.4: a composite type may only carry 7bit, 8bit
   or binary, and the label must be true).
3. A message without MIME headers gets ``MIME-Version: 1.0``, and any converted part without a
   ``Content-Type`` gets ``text/plain; charset=utf-8`` (or ``unknown-8bit``, RFC 1428, when the
   body is not valid UTF-8), so that the encoding is declared.
4. 8-bit octets in header fields are encoded as RFC 2047 encoded-words (UTF-8, or
   ``unknown-8bit`` when not valid UTF-8). (A message with UTF-8 headers that declared SMTPUTF8
   never reaches this module: it fails with 5.6.7 before, see ``relay_session``.)
5. The decoded content of every part is unchanged: decoding the output gives back the input's
   octets (text line ends as CRLF). Output lines end in CRLF.

What can go wrong: the whole message is parsed in memory (bounded by ``limits.max_message_size``);
malformed MIME is handled as the stdlib ``email`` parser does (leniently). Nothing raises for bad
input except ``OSError`` from the files.
"""

from __future__ import annotations

import base64
import email.policy
import io
import quopri
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import BinaryIO, Protocol

READ_CHUNK = 65536  # read the spool in 64 KiB pieces when scanning for 8-bit octets
_POLICY = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)  # RFC 5322 §2.1.1: 78


class Readable(Protocol):
    """A body to read from the start (``queue.api.BodySource``)."""

    def open(self) -> BinaryIO: ...


def has_8bit(body: Readable) -> bool:
    """Whether the body holds any octet above 127 (without reading it whole)."""
    with body.open() as f:
        while chunk := f.read(READ_CHUNK):
            if not chunk.isascii():
                return True
    return False


def header_section_has_8bit(body: Readable) -> bool:
    """Whether the header section (up to the first empty line) holds octets above 127."""
    seen = b""
    with body.open() as f:
        while chunk := f.read(READ_CHUNK):
            seen += chunk
            start = seen.startswith(b"\r\n") or seen.startswith(b"\n")
            ends = [i for i in (seen.find(b"\r\n\r\n"), seen.find(b"\n\n")) if i >= 0]
            if start or ends:
                return not seen[:0 if start else min(ends)].isascii()
            if not seen.isascii():
                return True
    return not seen.isascii()


def header_bytes_have_8bit(data: bytes) -> bool:
    """``header_section_has_8bit`` for a body held in memory (journaled relay mail on the fast
    road, ``delivery.relay`` Rule 12)."""
    if data.startswith((b"\r\n", b"\n")):
        return False
    end = len(data)
    for blank in (b"\r\n\r\n", b"\n\n"):
        i = data.find(blank)
        if i >= 0:
            end = min(end, i)
    return not data[:end].isascii()


def _charset_of(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown-8bit"
    return "utf-8"


def _fix_headers(msg: Message) -> None:
    """Rule 4: non-ASCII header values become RFC 2047 encoded-words (order kept)."""
    items = list(msg.raw_items())
    if all(isinstance(v, str) and v.isascii() for _, v in items):
        return
    fixed: list[tuple[str, str]] = []
    for name, value in items:
        text_value = str(value)
        if not text_value.isascii():
            # compat32 keeps 8-bit header octets as surrogateescape'd text.
            raw = text_value.encode("ascii", "surrogateescape")
            if _charset_of(raw) == "utf-8":
                text_value = Header(raw.decode("utf-8").strip(), "utf-8", header_name=name).encode()
            else:
                text_value = "=?unknown-8bit?b?" + base64.b64encode(raw.strip()).decode("ascii") + "?="
        fixed.append((name, text_value))
    for name in {n.lower() for n, _ in items}:
        del msg[name]
    for name, text_value in fixed:
        msg[name] = text_value


def _leaf_body(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _set_cte(part: Message, cte: str) -> None:
    del part["Content-Transfer-Encoding"]
    part["Content-Transfer-Encoding"] = cte


def _convert_leaf(part: Message) -> bool:
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte in ("base64", "quoted-printable"):
        return False  # already 7-bit by construction
    raw_payload = part.get_payload()
    if not isinstance(raw_payload, str) or raw_payload.isascii():
        if cte in ("8bit", "binary"):
            _set_cte(part, "7bit")  # Rule 2: the label must be true
            return True
        return False
    raw = _leaf_body(part)
    if "Content-Type" not in part:  # Rule 3, also for a message/rfc822 inside
        part["Content-Type"] = f"text/plain; charset={_charset_of(raw)}"
    if part.get_content_maintype() == "text":
        text = raw.replace(b"\r\n", b"\n")
        # quotetabs=False, header=False: RFC 2045 §6.7 rules (quopri wraps lines at 76 chars).
        body = quopri.encodestring(text).decode("ascii")
        _set_cte(part, "quoted-printable")
    else:
        body = base64.encodebytes(raw).decode("ascii")
        _set_cte(part, "base64")
    part.set_payload(body)
    return True


def to_7bit(data: bytes) -> bytes:
    """The message ``data`` converted per Rules 1-5 (unchanged if it is 7-bit already)."""
    if data.isascii():
        return data
    msg = BytesParser(policy=_POLICY).parsebytes(data)
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"  # Rule 3
    _fix_headers(msg)
    for part in msg.walk():
        if part is not msg:
            _fix_headers(part)
        if part.is_multipart():
            cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
            if cte in ("8bit", "binary"):
                _set_cte(part, "7bit")  # Rule 2
            continue
        _convert_leaf(part)
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(msg)
    return out.getvalue()


def convert_file(src: Path, dst: BinaryIO) -> None:
    """Write the 7-bit form of the message in ``src`` to ``dst``."""
    dst.write(to_7bit(src.read_bytes()))
