"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3; kept by RFC 9051 for clients that have not
enabled UTF8=ACCEPT, RFC 6855 §3).

Rules:
1. Printable US-ASCII (0x20–0x7E) stands for itself, except "&", which is written "&-".
2. Everything else is UTF-16BE, encoded in modified BASE64 (RFC 2045 alphabet with "," for "/",
   no "=" padding) between "&" and "-".
3. Decoding is strict (RFC 3501 §5.1.3 "MUST"s), so that one name has exactly one spelling and
   two spellings can never reach the store as different folders:
   - raw octets outside 0x20–0x7E are refused;
   - an encoded run must not be empty ("&-" is the only empty form), must not encode a printable
     ASCII character, must not directly follow another encoded run, must leave zero padding bits
     and must decode to well-formed UTF-16 (surrogates paired);
   - every "&" must be closed by "-".

What can go wrong: ``MUtf7Error`` (a ValueError) with the reason.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from pigeon.proto.imap.errors import MUtf7Error

__all__ = ["decode", "encode", "needs_encoding"]

_B64_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _printable(c: str) -> bool:
    return "\x20" <= c <= "\x7e"


def needs_encoding(name: str) -> bool:
    """True when ``encode(name) != name``."""
    return any(c == "&" or not _printable(c) for c in name)


def _b64(chunk: str) -> str:
    raw = chunk.encode("utf-16-be", "surrogatepass")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    """UTF-8 mailbox name → modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []
    for c in name:
        if _printable(c):
            if pending:
                out.append("&" + _b64("".join(pending)) + "-")
                pending = []
            out.append("&-" if c == "&" else c)
        else:
            pending.append(c)
    if pending:
        out.append("&" + _b64("".join(pending)) + "-")
    return "".join(out)


def _decode_run(run: str) -> str:
    if any(c not in _B64_CHARS for c in run):
        raise MUtf7Error("bad character in modified BASE64")
    if len(run) % 4 == 1:
        raise MUtf7Error("truncated modified BASE64")
    padded = run.replace(",", "/") + "=" * (-len(run) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MUtf7Error(f"bad modified BASE64: {e}") from None
    if len(raw) % 2:
        raise MUtf7Error("odd number of UTF-16 octets")
    # zero padding bits: re-encoding must give back the same text (canonical form)
    if base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") != run:
        raise MUtf7Error("non-zero padding bits in modified BASE64")
    try:
        text = raw.decode("utf-16-be")  # strict: unpaired surrogates raise
    except UnicodeDecodeError:
        raise MUtf7Error("unpaired UTF-16 surrogate") from None
    if any(_printable(c) for c in text):
        raise MUtf7Error("printable US-ASCII must not be encoded")  # RFC 3501 §5.1.3
    return text


def decode(name: str) -> str:
    """Modified UTF-7 mailbox name → UTF-8 (str); ``MUtf7Error`` if it is not canonical."""
    out: list[str] = []
    i, n = 0, len(name)
    last_encoded_end = -1
    while i < n:
        c = name[i]
        if not _printable(c):
            raise MUtf7Error("octet outside printable US-ASCII")
        if c != "&":
            out.append(c)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise MUtf7Error("'&' not closed by '-'")
        run = name[i + 1 : end]
        if not run:
            out.append("&")
        else:
            if last_encoded_end == i:
                raise MUtf7Error("adjacent encoded runs must be merged")
            out.append(_decode_run(run))
            last_encoded_end = end + 1
        i = end + 1
    return "".join(out)
