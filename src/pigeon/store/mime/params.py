"""MIME structured header values: Content-Type, Content-Disposition, parameters (RFC 2231).

Rules:
1. ``type "/" subtype`` are RFC 2045 §5.1 tokens, returned lower-cased. A syntactically invalid
   Content-Type yields None; the caller then assumes ``text/plain; charset=us-ascii``
   (RFC 2045 §5.2 recommends it).
2. Parameter attributes are lower-cased (RFC 2045 §5.1: case-insensitive); values keep their
   bytes. A quoted value is unquoted (backslash escapes removed); an unquoted value runs to the
   next ``;``, whitespace or comment, so that real-world unquoted values with ``=`` or ``/`` in
   them (boundaries, file names) survive.
3. RFC 2231 continuations (``name*0``, ``name*1*``...) are merged in numeric order, stopping at
   the first gap (RFC 2231 §3). The merged parameter keeps the form IMAP servers report in
   BODYSTRUCTURE (as Dovecot does): ``name*`` with ``charset'lang'%XX`` text when the first
   section is extended (RFC 2231 §4), else plain ``name``. Plain sections that follow an
   extended one are percent-encoded so the merged value stays decodable. ``param_text`` gives
   the decoded text.
4. The first occurrence of a parameter wins; later duplicates are dropped. Garbage between
   parameters is skipped. Nothing here raises.
"""

from __future__ import annotations

import re
from urllib.parse import quote_from_bytes, unquote_to_bytes

from pigeon.store.mime.decode import decode_charset
from pigeon.store.mime.headers import decode_words

Params = tuple[tuple[str, bytes], ...]

# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_SECTION_RE = re.compile(r"(.+?)\*(\d{1,3})(\*?)")  # RFC 2231 §3; 3 digits bound the work
_MAX_SECTIONS = 1000  # matches the 3-digit section numbers accepted above


def _skip_cfws(data: bytes, pos: int) -> int:
    """Skip whitespace and (nested) comments (RFC 5322 §3.2.2)."""
    n = len(data)
    while pos < n:
        c = data[pos]
        if c in b" \t\r\n":
            pos += 1
        elif c == 0x28:  # "("
            depth = 0
            while pos < n:
                c = data[pos]
                if c == 0x5C:  # backslash quotes the next byte
                    pos += 2
                    continue
                if c == 0x28:
                    depth += 1
                elif c == 0x29:
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
        else:
            break
    return pos


def _read_quoted(data: bytes, pos: int) -> tuple[bytes, int]:
    """``data[pos]`` is a DQUOTE; return the unescaped content and the position after it."""
    out = bytearray()
    pos += 1
    n = len(data)
    while pos < n:
        c = data[pos]
        if c == 0x22:
            return bytes(out), pos + 1
        if c == 0x5C and pos + 1 < n:
            pos += 1
            c = data[pos]
        out.append(c)
        pos += 1
    return bytes(out), pos  # unterminated: take the rest


def _read_token(data: bytes, pos: int) -> tuple[bytes, int]:
    m = _TOKEN_RE.match(data, pos)
    if m is None:
        return b"", pos
    return m.group(0), m.end()


def parse_params(data: bytes, pos: int = 0) -> Params:
    """Parameters from ``data[pos:]`` (``; attr=value`` pairs), merged per rule 3."""
    raw: list[tuple[str, bytes]] = []
    n = len(data)
    while pos < n:
        pos = _skip_cfws(data, pos)
        if pos >= n:
            break
        if data[pos] == 0x3B:  # ";"
            pos += 1
            continue
        eq = data.find(b"=", pos)
        semi = data.find(b";", pos)
        if eq < 0 or (0 <= semi < eq):
            # No "=" before the next ";": junk; skip to the next parameter (rule 4).
            pos = semi + 1 if semi >= 0 else n
            continue
        attr = data[pos:eq].strip(b" \t\r\n").decode("latin-1").lower()
        pos = _skip_cfws(data, eq + 1)
        if pos < n and data[pos] == 0x22:
            value, pos = _read_quoted(data, pos)
        else:
            start = pos
            while pos < n and data[pos] not in b"; \t\r\n(":
                pos += 1
            value = data[start:pos]
        if attr and " " not in attr:
            raw.append((attr, value))
    return _merge_2231(raw)


def _merge_2231(raw: list[tuple[str, bytes]]) -> Params:
    order: list[str] = []
    plain: dict[str, bytes] = {}
    extended: dict[str, bytes] = {}
    sections: dict[str, dict[int, tuple[bytes, bool]]] = {}
    for attr, value in raw:
        m = _SECTION_RE.fullmatch(attr)
        if m is not None:
            base = m.group(1)
            secs = sections.setdefault(base, {})
            secs.setdefault(int(m.group(2)), (value, m.group(3) == "*"))
        elif attr.endswith("*") and len(attr) > 1:
            base = attr[:-1]
            extended.setdefault(base, value)
        else:
            base = attr
            plain.setdefault(base, value)
        if base not in order:
            order.append(base)
    out: list[tuple[str, bytes]] = []
    for base in order:
        if base in plain:
            out.append((base, plain[base]))
        cont = sections.get(base)
        if cont and 0 in cont:
            first_ext = cont[0][1]
            pieces: list[bytes] = []
            for i in range(min(len(cont), _MAX_SECTIONS)):
                if i not in cont:
                    break  # RFC 2231 §3: sections are sequential; a gap ends the value
                value, ext = cont[i]
                if first_ext and not ext:
                    value = quote_from_bytes(value, safe="").encode("ascii")
                pieces.append(value)
            merged = b"".join(pieces)
            if first_ext:
                out.append((base + "*", merged))
            elif base not in plain:
                out.append((base, merged))
        elif base in extended:
            out.append((base + "*", extended[base]))
    return tuple(out)


def decode_2231(value: bytes) -> str:
    """Text of an extended value ``charset'language'%XX...`` (RFC 2231 §4)."""
    charset = ""
    parts = value.split(b"'", 2)
    if len(parts) == 3:
        charset = parts[0].decode("latin-1")
        value = parts[2]
    return decode_charset(unquote_to_bytes(value), charset)


def param_text(params: Params, name: str) -> str | None:
    """Decoded text of parameter ``name``: RFC 2231 form first, else the plain one (whose
    RFC 2047 encoded words, a common violation in file names, are decoded too)."""
    name = name.lower()
    plain: bytes | None = None
    for attr, value in params:
        if attr == name + "*":
            return decode_2231(value)
        if attr == name and plain is None:
            plain = value
    return None if plain is None else decode_words(plain)


def param_bytes(params: Params, name: str) -> bytes | None:
    for attr, value in params:
        if attr == name:
            return value
    return None


def parse_content_type(value: bytes) -> tuple[str, str, Params] | None:
    """(type, subtype, params), or None when the value is not ``token "/" token`` (rule 1)."""
    pos = _skip_cfws(value, 0)
    type_, pos = _read_token(value, pos)
    pos = _skip_cfws(value, pos)
    if not type_ or not value.startswith(b"/", pos):
        return None
    pos = _skip_cfws(value, pos + 1)
    subtype, pos = _read_token(value, pos)
    if not subtype:
        return None
    return type_.decode("ascii").lower(), subtype.decode("ascii").lower(), parse_params(value, pos)


def parse_disposition(value: bytes) -> tuple[str, Params] | None:
    """(disposition type, params) per RFC 2183 §2, or None when there is no type token."""
    pos = _skip_cfws(value, 0)
    kind, pos = _read_token(value, pos)
    if not kind:
        return None
    return kind.decode("ascii").lower(), parse_params(value, pos)


def parse_token(value: bytes) -> str | None:
    """A single token, e.g. a Content-Transfer-Encoding (RFC 2045 §6.1), lower-cased."""
    token, _ = _read_token(value, _skip_cfws(value, 0))
    return token.decode("ascii").lower() if token else None


def parse_language(value: bytes) -> tuple[bytes, ...]:
    """Content-Language tags (RFC 3282 §2: a comma list of language tags, CFWS allowed)."""
    tags: list[bytes] = []
    for piece in value.split(b","):
        token, _ = _read_token(piece, _skip_cfws(piece, 0))
        if token:
            tags.append(token)
    return tuple(tags)
