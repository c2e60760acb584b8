"""The MIME part tree of a message, found by scanning its bytes (RFC 2045, RFC 2046).

A ``Message`` is a span of the shared buffer (a whole message, or the body of a message/rfc822
part) with a root ``Part``. A ``Part`` has a header span and a body span; a multipart has
``children``; a message/rfc822 part has the embedded ``message``. No bytes are copied except
each part's (small) header block.

Rules:
1. Header/body split as in ``headers``: the header includes its empty line; no empty line means
   all header, empty body.
2. Content-Type missing or invalid: ``text/plain; charset=us-ascii`` (RFC 2045 §5.2), except a
   part of multipart/digest with no Content-Type, which is message/rfc822 (RFC 2046 §5.1.5).
   A text/* part with no charset parameter reports ``charset=us-ascii`` (RFC 2045 §5.2 default),
   as Dovecot does. Missing Content-Transfer-Encoding is ``7bit`` (RFC 2045 §6.1).
3. Boundaries (RFC 2046 §5.1.1): a delimiter is ``--boundary`` at the start of a line, followed
   by optional whitespace and the line end (or ``--`` for the close delimiter). The line break
   before a delimiter belongs to the delimiter, not to the part. Preamble and epilogue are not
   parts. A missing close delimiter ends the last part at the end of the enclosing body; a
   multipart with no boundary parameter or no delimiter has no children.
4. Limits: nesting deeper than MAX_NESTING, or parts beyond MAX_PARTS, are not split: such a
   multipart or message/rfc822 part is ``opaque`` (a leaf whose IMAP type is reported as
   application/octet-stream). A message/rfc822 part with a non-identity transfer encoding
   (forbidden by RFC 2046 §5.2.1) is also opaque, since its bytes are not a message.
5. ``lines`` is counted for text/* and message/rfc822 parts: the number of line ends in the body
   plus one for a last line without one (RFC 3501 §7.4.2 body-fld-lines).
6. Parsing never raises: bare LF line ends, 8-bit headers, missing separators and truncated
   multiparts all give a tree.

IMAP part numbers (RFC 3501 §6.4.5) are resolved by ``find_part``: a non-multipart message has
only part 1 (itself); a message/rfc822 part's sub-parts are those of its embedded message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pigeon.store.mime.headers import Headers, find_body_start
from pigeon.store.mime.params import (
    Params,
    param_bytes,
    param_text,
    parse_content_type,
    parse_disposition,
    parse_language,
    parse_token,
)

MAX_NESTING = 100  # Dovecot's MESSAGE_PARSER_DEFAULT_MAX_NESTED_MIME_PARTS
MAX_PARTS = 10_000  # Dovecot's MESSAGE_PARSER_DEFAULT_MAX_TOTAL_MIME_PARTS
IDENTITY_CTES = frozenset({"7bit", "8bit", "binary"})  # RFC 2045 §6.4: the only ones for composites
_DEFAULT_PARAMS: Params = (("charset", b"us-ascii"),)


@dataclass(slots=True, eq=False)
class Part:
    data: bytes = field(repr=False)
    header_start: int
    body_start: int
    body_end: int
    headers: Headers = field(repr=False)
    type: str = "text"
    subtype: str = "plain"
    params: Params = _DEFAULT_PARAMS
    cte: str = "7bit"
    disposition: tuple[str, Params] | None = None
    language: tuple[bytes, ...] = ()
    location: bytes | None = None
    content_id: bytes | None = None
    description: bytes | None = None
    md5: bytes | None = None
    children: list[Part] = field(default_factory=list)
    message: Message | None = None
    opaque: bool = False
    lines: int = 0

    @property
    def header(self) -> bytes:
        """The part's header block, empty line included (IMAP ``MIME`` for sub-parts)."""
        return self.headers.block

    @property
    def body(self) -> bytes:
        return self.data[self.body_start : self.body_end]

    @property
    def size(self) -> int:
        """Body octets (RFC 3501 body-fld-octets)."""
        return self.body_end - self.body_start

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart" and not self.opaque

    @property
    def is_message(self) -> bool:
        return self.message is not None

    def param(self, name: str) -> str | None:
        """Decoded Content-Type parameter (RFC 2231 aware)."""
        return param_text(self.params, name)

    @property
    def filename(self) -> str | None:
        """RFC 2183 ``filename`` of the disposition, else the Content-Type ``name``."""
        if self.disposition is not None:
            name = param_text(self.disposition[1], "filename")
            if name is not None:
                return name
        return self.param("name")


@dataclass(slots=True, eq=False)
class Message:
    data: bytes = field(repr=False)
    start: int
    end: int
    root: Part

    @property
    def headers(self) -> Headers:
        return self.root.headers

    @property
    def header(self) -> bytes:
        return self.root.headers.block

    @property
    def body(self) -> bytes:
        return self.root.body

    @property
    def size(self) -> int:
        return self.end - self.start


class _Budget:
    """Parts left to create across one parse (rule 4)."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_PARTS


def parse_message(data: bytes) -> Message:
    """The part tree of a whole message (CRLF line ends expected, anything accepted)."""
    return _message(data, 0, len(data), 0, _Budget())


def _message(data: bytes, start: int, end: int, depth: int, budget: _Budget) -> Message:
    return Message(data, start, end, _part(data, start, end, depth, budget, False))


def _count_lines(data: bytes, start: int, end: int) -> int:
    if start >= end:
        return 0
    lines = data.count(b"\n", start, end)
    return lines if data[end - 1] == 0x0A else lines + 1


def _part(data: bytes, start: int, end: int, depth: int, budget: _Budget, in_digest: bool) -> Part:
    budget.left -= 1
    body_start = find_body_start(data, start, end)
    headers = Headers(data[start:body_start])
    part = Part(data, start, body_start, end, headers)
    raw_ct = headers.get("content-type")
    parsed = parse_content_type(raw_ct) if raw_ct is not None else None
    if parsed is not None:
        part.type, part.subtype, part.params = parsed
        if part.type == "text" and param_bytes(part.params, "charset") is None:
            part.params = part.params + _DEFAULT_PARAMS  # rule 2
    elif raw_ct is None and in_digest:
        part.type, part.subtype, part.params = "message", "rfc822", ()  # RFC 2046 §5.1.5
    raw = headers.get("content-transfer-encoding")
    part.cte = (parse_token(raw) if raw is not None else None) or "7bit"
    raw = headers.get("content-disposition")
    if raw is not None:
        part.disposition = parse_disposition(raw)
    raw = headers.get("content-language")
    if raw is not None:
        part.language = parse_language(raw)
    part.location = headers.get("content-location")
    part.content_id = headers.get("content-id")
    part.description = headers.get("content-description")
    part.md5 = headers.get("content-md5")

    if part.type == "multipart":
        if depth >= MAX_NESTING or budget.left <= 0:
            part.opaque = True
        else:
            boundary = param_bytes(part.params, "boundary")
            if boundary:
                digest = part.subtype == "digest"
                for s, e in _split(data, body_start, end, boundary, budget):
                    part.children.append(_part(data, s, e, depth + 1, budget, digest))
    elif part.type == "message" and part.subtype == "rfc822":
        if depth >= MAX_NESTING or budget.left <= 0 or part.cte not in IDENTITY_CTES:
            part.opaque = True
        else:
            part.message = _message(data, body_start, end, depth + 1, budget)
    if part.type == "text" or (part.type == "message" and part.subtype == "rfc822"):
        part.lines = _count_lines(data, body_start, end)
    return part


def _split(data: bytes, start: int, end: int, boundary: bytes, budget: _Budget) -> list[tuple[int, int]]:
    """Spans of the body parts between delimiters of ``boundary`` (rule 3)."""
    delim = b"--" + boundary
    spans: list[tuple[int, int]] = []
    part_start = -1
    pos = start
    while True:
        i = data.find(delim, pos, end)
        if i < 0:
            break
        pos = i + 1
        if i != start and data[i - 1] != 0x0A:
            continue  # not at the start of a line
        after = i + len(delim)
        close = data.startswith(b"--", after) and after + 2 <= end
        k = after + 2 if close else after
        if k < end and data[k] not in b" \t\r\n":
            continue  # a longer string that merely starts with the delimiter
        if part_start >= 0:
            part_end = i
            if part_end > part_start and data[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > part_start and data[part_end - 1] == 0x0D:
                    part_end -= 1
            spans.append((part_start, part_end))
            part_start = -1
        if close or len(spans) >= budget.left:
            break
        nl = data.find(b"\n", k, end)
        part_start = nl + 1 if nl >= 0 else end
        pos = part_start
    if part_start >= 0:
        spans.append((part_start, end))  # no close delimiter: the part runs to the end
    return spans


def part_children(part: Part) -> list[Part]:
    """The parts numbered below ``part`` (RFC 3501 §6.4.5)."""
    if part.is_multipart:
        return part.children
    if part.message is not None:
        root = part.message.root
        return root.children if root.is_multipart else [root]
    return []


def find_part(msg: Message, path: tuple[int, ...]) -> Part | None:
    """The part at IMAP section number ``path`` (non-empty), or None when there is none."""
    root = msg.root
    kids = root.children if root.is_multipart else [root]
    found: Part | None = None
    for n in path:
        if n < 1 or n > len(kids):
            return None
        found = kids[n - 1]
        kids = part_children(found)
    return found
