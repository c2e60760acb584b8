"""A strict imaplib-style reader of IMAP FETCH data, to check what the mime package renders.

It returns nested lists: NIL → None, numbers → int, quoted strings and literals → bytes.
It checks the framing a client relies on: balanced parentheses, exact literal lengths, valid
quoted strings, and single spaces between items (except between consecutive parenthesized
lists, which ``1*body`` in a multipart allows).
"""

from __future__ import annotations

import re

Item = None | int | bytes | list["Item"]

_ATOM_RE = re.compile(rb"[^ ()\"{}\r\n\x00]+")


class ImapSyntaxError(ValueError):
    pass


def parse(data: bytes) -> Item:
    item, pos = _read(data, 0)
    if pos != len(data):
        raise ImapSyntaxError(f"trailing data at {pos}: {data[pos:pos + 20]!r}")
    return item


def _read(data: bytes, pos: int) -> tuple[Item, int]:
    if pos >= len(data):
        raise ImapSyntaxError("unexpected end")
    c = data[pos : pos + 1]
    if c == b"(":
        items: list[Item] = []
        pos += 1
        prev_list = False
        while True:
            if pos >= len(data):
                raise ImapSyntaxError("unbalanced parenthesis")
            if data[pos : pos + 1] == b")":
                return items, pos + 1
            if items:
                if data[pos : pos + 1] == b" ":
                    pos += 1
                elif not (prev_list and data[pos : pos + 1] == b"("):
                    raise ImapSyntaxError(f"missing space at {pos}")
            item, pos = _read(data, pos)
            prev_list = isinstance(item, list)
            items.append(item)
    if c == b'"':
        out = bytearray()
        pos += 1
        while True:
            if pos >= len(data):
                raise ImapSyntaxError("unterminated quoted string")
            b = data[pos : pos + 1]
            if b in (b"\r", b"\n", b"\x00"):
                raise ImapSyntaxError("CR, LF or NUL in a quoted string")
            if b == b"\\":
                nxt = data[pos + 1 : pos + 2]
                if nxt not in (b"\\", b'"'):
                    raise ImapSyntaxError("bad escape")
                out += nxt
                pos += 2
                continue
            if b == b'"':
                return bytes(out), pos + 1
            out += b
            pos += 1
    if c == b"{":
        m = re.compile(rb"\{(\d+)\}\r\n").match(data, pos)
        if m is None:
            raise ImapSyntaxError("bad literal header")
        n = int(m.group(1))
        start = m.end()
        if start + n > len(data):
            raise ImapSyntaxError("literal runs past the end")
        body = data[start : start + n]
        if b"\x00" in body:
            raise ImapSyntaxError("NUL in literal")
        return body, start + n
    m = _ATOM_RE.match(data, pos)
    if m is None:
        raise ImapSyntaxError(f"unexpected {c!r} at {pos}")
    atom = m.group(0)
    if atom == b"NIL":
        return None, m.end()
    if atom.isdigit():
        return int(atom), m.end()
    raise ImapSyntaxError(f"unexpected atom {atom!r}")
