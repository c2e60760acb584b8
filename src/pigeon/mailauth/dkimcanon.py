"""DKIM's byte-level work (RFC 6376 §3.2, §3.4, §3.7): the message split into header fields and
body, tag lists, both canonicalisations and the hashes. Pure functions over bytes, no IO.

Rules:
1. ``split_message(message)`` gives the header fields (name, value) top first and the offset
   of the body. Lines end in CRLF or a bare LF (both accepted; a bare LF counts as CRLF, the
   same normalisation dkimpy applies, so a message stored with LF endings verifies as on the
   wire). The header block ends at the first empty line (RFC 5322 §2.1); a line starting with
   WSP continues the field above; a leading mbox ``From `` line is skipped; any other line
   without ``name:`` (name of printable US-ASCII, RFC 5322 §2.2) raises ``MessageError``.
   A value keeps its folding, each of its lines ending in CRLF: the simple canonicalisation.
2. ``parse_tags`` reads a tag=value list (RFC 6376 §3.2): tag names are ALPHA *(ALNUM / "_"),
   values are stripped of surrounding whitespace, a duplicated tag or a spec without ``=`` is
   an error (``TagError``); a trailing ``;`` is allowed.
3. Header canonicalisation (§3.4.1 simple, §3.4.2 relaxed): relaxed lowercases the name,
   unfolds the value (removes CRLF), turns each run of WSP into one space and strips the value.
   ``header_hash_input`` selects the fields named in ``h=`` bottom-up, each instance used once,
   a name with no unused instance left contributing nothing (§5.4.2); when ``h=`` lists
   ``from``, one more ``from`` is selected so that an extra From field added above the signed
   one breaks the signature (dkimpy's defence, kept: a message with two From fields cannot
   pass DMARC anyway). The signature field itself comes last, its ``b=`` value emptied and
   without its final CRLF (§3.7).
4. Body canonicalisation (§3.4.3 simple, §3.4.4 relaxed) and hashing (§3.7) are done with
   whole-buffer bytes operations (``replace``, ``count``, ``rstrip``: no per-octet Python and no
   regular expression over the body), in chunks of at most ``CHUNK``
   octets cut after a line end, so a big body costs a few passes in C and bounded extra
   memory. Trailing empty lines are held back across chunks and dropped at the end; simple
   always ends with one CRLF (an empty body is CRLF), relaxed ends with one CRLF unless the
   canonical body is empty. ``body_hashes`` hashes one canonicalisation for several ``l=``
   values at once (``None`` = the whole body) and returns the canonical body's length. Bare
   LFs become CRLF first (the message as it would travel on the wire), unless the caller says
   ``crlf`` (every line already ends in CRLF: an SMTP session that saw no bare CR or LF), which
   spares two counting passes over the body.

What can go wrong: a line longer than ``CHUNK`` makes that chunk as long as the line (the
message is already in memory; this only bounds the copies). Header-level whitespace outside
WSP (``\\x0b``, ``\\x0c``) at the ends of a relaxed value is stripped, like dkimpy does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from typing import Protocol

# Rule 4: the size of the pieces the body is canonicalised in. 1 MiB keeps the temporary copies
# small while a typical 10-100 KB body is a single piece (one pass of each regex).
CHUNK = 1 << 20

Field = tuple[bytes, bytes]  # (name as received, value with its folding and final CRLF)


class MessageError(ValueError):
    """The header block has a line that is neither a field nor a continuation (rule 1)."""


class TagError(ValueError):
    """A malformed tag=value list (rule 2)."""


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


_FTEXT = bytes(range(0x21, 0x7f))  # RFC 5322 §2.2: a field name is printable US-ASCII (not ":")
_LINE_SPLIT = re.compile(rb"\r?\n")
_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")  # RFC 6376 §3.2 tag-name
_WSP_RUN = re.compile(rb"[\t ]+")


def split_message(message: bytes) -> tuple[list[Field], int]:
    """Rule 1: (header fields top first, offset where the body starts)."""
    if message.startswith(b"\n") or message.startswith(b"\r\n"):
        return [], message.index(b"\n") + 1
    crlf = message.find(b"\n\r\n")
    lf = message.find(b"\n\n", 0, len(message) if crlf < 0 else crlf + 1)  # never scans the body
    ends = [i for i in (crlf, lf) if i >= 0]
    if ends:
        head_end = min(ends)
        body_start = message.index(b"\n", head_end + 1) + 1
    else:
        head_end, body_start = len(message), len(message)
    head = message[:head_end]
    if head.endswith(b"\r"):
        head = head[:-1]  # the CR of the last header line's CRLF
    lines = head.split(b"\r\n") if head.count(b"\n") == head.count(b"\r\n") else _LINE_SPLIT.split(head)
    if lines and not lines[-1] and not ends:
        lines.pop()  # the message ended after its last header line
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MessageError("the header block starts with a continuation line")
            fields[-1][1] += line + b"\r\n"
            continue
        colon = line.find(b":")
        if colon > 0 and not line[:colon].translate(None, _FTEXT):
            fields.append([line[:colon], line[colon + 1:] + b"\r\n"])
        elif not (line.startswith(b"From ") and not fields):
            raise MessageError(f"not a header field: {line[:40]!r}")
    return [(name, value) for name, value in fields], body_start


def parse_tags(value: bytes) -> dict[bytes, bytes]:
    """Rule 2."""
    specs = value.strip().split(b";")
    if specs and not specs[-1].strip():
        specs.pop()  # a trailing ";" (§3.2)
    tags: dict[bytes, bytes] = {}
    for spec in specs:
        name, eq, val = spec.partition(b"=")
        name = name.strip()
        if not eq or not _TAG_NAME.match(name):
            raise TagError(f"malformed tag spec {spec.strip()[:40]!r}")
        if name in tags:
            raise TagError(f"duplicate tag {name.decode('ascii', 'replace')}=")
        tags[name] = val.strip()
    return tags


def _relaxed_value(value: bytes) -> bytes:
    if b"\x0b" in value or b"\x0c" in value or value.count(b"\r") != value.count(b"\n"):
        return _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip() + b"\r\n"
    # Only SP, HTAB and folding CRLFs (each followed by WSP) are whitespace here: splitting on
    # whitespace unfolds, compresses and strips in one C call.
    return b" ".join(value.split()) + b"\r\n"


def canonical_field(name: bytes, value: bytes, relaxed: bool) -> bytes:
    """Rule 3: one header field, canonicalised, with its CRLF."""
    if relaxed:
        return name.lower() + b":" + _relaxed_value(value)
    return name + b":" + value


def _without_b_value(value: bytes) -> bytes:
    """§3.7: the signature field's value with the b= tag's value emptied. The whitespace before
    the value goes with it, the whitespace after it stays (tag-spec's trailing [FWS], §3.2);
    a ``;`` cannot occur inside a tag value, so the tag specs are the ``;``-separated parts."""
    parts = value.split(b";")
    for i, part in enumerate(parts):
        name, eq, rest = part.partition(b"=")
        if eq and name.strip() == b"b":
            parts[i] = name + b"=" + rest[len(rest.rstrip()):]
    return b";".join(parts)


def header_hash_input(fields: Sequence[Field], signed_names: Sequence[bytes], signature: Field,
                      relaxed: bool) -> bytes:
    """Rule 3: the octets the signature's header hash covers (§3.7 step 2)."""
    wanted = [n.lower() for n in signed_names]
    if b"from" in wanted:
        wanted.append(b"from")
    lowered = [name.lower() for name, _ in fields]
    next_below: dict[bytes, int] = {}  # name -> index below which to look for its next instance
    parts: list[bytes] = []
    for name in wanted:
        i = next_below.get(name, len(fields))
        while i > 0:
            i -= 1
            if lowered[i] == name:
                parts.append(canonical_field(fields[i][0], fields[i][1], relaxed))
                break
        next_below[name] = i
    parts.append(signature_field_input(signature, relaxed))
    return b"".join(parts)


def signature_field_input(signature: Field, relaxed: bool) -> bytes:
    """Rule 3: the signature field as its own hash covers it: ``b=`` emptied, canonicalised,
    without the final CRLF (§3.7; RFC 8617 §5.1.1 for the ARC-Seal, always relaxed)."""
    return canonical_field(signature[0], _without_b_value(signature[1]), relaxed).rstrip()


def _split_trailing_crlfs(chunk: bytes) -> tuple[bytes, int]:
    """(the chunk without its trailing run of CRLFs, how many CRLFs that run had). Every LF in
    ``chunk`` is preceded by CR (line ends normalised), so the run ends at the last lone CR."""
    text = chunk.rstrip(b"\r\n")
    tail = chunk[len(text):]
    if tail.endswith(b"\r"):
        return chunk, 0  # a lone CR ends the body: no line end at all
    lone = tail.rfind(b"\r\r")
    if lone >= 0:
        cut = len(text) + lone + 1
        return chunk[:cut], (len(chunk) - cut) // 2
    return text, len(tail) // 2


def _relaxed_lines(chunk: bytes) -> bytes:
    """§3.4.4 on CRLF-ended lines: every WSP run becomes one SP, then the SP before each CRLF
    goes. Plain bytes replaces (memchr speed): a run of n spaces needs log2(n) halving passes;
    a regular expression would cost far more per octet, even where there is nothing to do."""
    if b"\t" in chunk:
        chunk = chunk.replace(b"\t", b" ")
    elif b" " not in chunk:
        return chunk  # no WSP at all (base64 parts): one memchr instead of two substring scans
    while b"  " in chunk:
        chunk = chunk.replace(b"  ", b" ")
    if b" \r\n" in chunk:
        chunk = chunk.replace(b" \r\n", b"\r\n")
    return chunk


def _chunks(message: bytes, start: int, crlf: bool = False) -> Iterator[bytes]:
    """The body in pieces cut after a LF, each normalised to CRLF line ends (rule 1)."""
    pos, end = start, len(message)
    while pos < end:
        stop = min(pos + CHUNK, end)
        if stop < end:
            lf = message.rfind(b"\n", pos, stop)
            if lf < 0:
                lf = message.find(b"\n", stop)
            stop = end if lf < 0 else lf + 1
        chunk = message[pos:stop]
        pos = stop
        if not crlf and chunk.count(b"\n") != chunk.count(b"\r\n"):
            chunk = _LINE_SPLIT.sub(b"\r\n", chunk)
        yield chunk


def canonical_body(message: bytes, start: int, relaxed: bool, crlf: bool = False) -> Iterator[bytes]:
    """Rule 4: the canonical body of ``message[start:]``, in pieces."""
    pending = 0  # CRLFs held back: they are trailing empty lines unless content follows
    emitted = False
    for chunk in _chunks(message, start, crlf):
        if relaxed:
            chunk = _relaxed_lines(chunk)
        text, crlfs = _split_trailing_crlfs(chunk)
        if text:
            while pending:
                n = min(pending, max(1, CHUNK // 2))
                yield b"\r\n" * n
                pending -= n
            yield text
            emitted = True
            pending = crlfs
        else:
            pending += crlfs
    if emitted or not relaxed:
        yield b"\r\n"  # simple: exactly one line end (an empty body is CRLF, §3.4.3)


def body_hashes(message: bytes, start: int, relaxed: bool,
                limits: Sequence[int | None], *, crlf: bool = False) -> tuple[dict[int | None, bytes], int]:
    """Rule 4: ({l= or None: sha256 digest of the first l octets}, canonical length)."""
    hashers: dict[int | None, Hasher] = {limit: hashlib.sha256() for limit in limits}
    length = 0
    for piece in canonical_body(message, start, relaxed, crlf):
        for limit, h in hashers.items():
            if limit is None:
                h.update(piece)
            elif length < limit:
                h.update(piece[:limit - length])
        length += len(piece)
    return {limit: h.digest() for limit, h in hashers.items()}, length
