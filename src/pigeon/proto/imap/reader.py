"""The cursor over one framed command, the grammar's terminals, and the generic tokenizer.

The typed parsers walk a ``Reader`` with the terminal they expect at each point (the IMAP
grammar is context-dependent: ``[`` is an atom character in ``[Gmail]/Sent`` but opens a section
in ``BODY[TEXT]``). ``tokenize`` reads any command into generic ``Token`` values, for logging,
extension commands and tests.

Rules:
1. Terminals follow RFC 3501 §9 (with RFC 9051's UTF-8 in quoted strings):
   - atom: 1*ATOM-CHAR; ATOM-CHAR is any CHAR (0x01–0x7F) except atom-specials
     ``( ) { SP CTL % * " \\ ]``;
   - astring: 1*ASTRING-CHAR (atom chars and ``]``) or a string;
   - quoted: ``"`` *(TEXT-CHAR except ``"``/``\\``, or ``\\"``, ``\\\\``) ``"``; 8-bit UTF-8 is
     allowed (RFC 9051 §9 ``QUOTED-CHAR =/ UTF8-2 ...``, RFC 6855 §3); CR, LF and NUL never;
   - literal: ``{n}``/``{n+}`` at the end of a line, the payload is the next fragment; NUL is
     refused in a literal (RFC 3501 §9 CHAR8) but allowed in a literal8 ``~{n}`` where the caller
     permits one (RFC 3516). A literal the framing core passed on instead of keeping (an APPEND
     message, ``connection`` rule 4) is read only by ``message_literal``, as a
     ``SpooledLiteral``; anywhere else it is a ``ParseError`` (a mailbox name of 64 KiB);
   - number: 1*DIGIT within 32 bits (``number64`` within 63 bits, RFC 9051 §9).
   Exactly one SP separates arguments.
2. Parenthesised structures nest at most ``MAX_DEPTH`` levels; deeper input is a ``ParseError``
   (never a RecursionError).
3. Every failure is a ``ParseError`` with a short reason naming what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from pigeon.proto.imap.errors import ParseError

__all__ = [
    "MAX_DEPTH",
    "Atom",
    "LiteralString",
    "Nil",
    "ParenList",
    "QuotedString",
    "Reader",
    "SpooledLiteral",
    "Token",
    "tokenize",
]

T = TypeVar("T")

#: Deepest nesting of parentheses (SEARCH groups, NOT/OR chains, lists). RFC 3501 sets no
#: number; real clients nest a handful of levels. 64 keeps recursion far below Python's limit.
MAX_DEPTH: Final = 64
MAX_NUMBER: Final = 4294967295  # RFC 3501 §9 number: 32 bits
MAX_NUMBER64: Final = 9223372036854775807  # RFC 9051 §9 number64: 63 bits

_CTL: Final = frozenset(range(0x00, 0x20)) | {0x7F}
_ATOM_SPECIALS: Final = frozenset(b'(){ %*"\\]') | _CTL
ATOM_CHARS: Final = frozenset(range(0x01, 0x80)) - _ATOM_SPECIALS
ASTRING_CHARS: Final = ATOM_CHARS | {ord("]")}
#: list-mailbox (RFC 3501 §9): ASTRING-CHAR plus the wildcards.
LIST_CHARS: Final = ASTRING_CHARS | {ord("%"), ord("*")}
_SP: Final = 0x20


@dataclass(frozen=True, slots=True)
class Atom:
    text: str  # may include a bracketed part: BODY[HEADER.FIELDS (A B)]<0.10>


@dataclass(frozen=True, slots=True)
class QuotedString:
    value: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class LiteralString:
    value: bytes = field(repr=False)
    binary: bool = False  # literal8 ~{n}


@dataclass(frozen=True, slots=True)
class SpooledLiteral:
    """A literal whose octets the session holds (``events.LiteralData``), not the command."""

    index: int  # 0 for the command's first passed-on literal, 1 for the next, ...
    size: int


@dataclass(frozen=True, slots=True)
class Nil:
    pass


@dataclass(frozen=True, slots=True)
class ParenList:
    items: tuple[Token, ...]


Token = Atom | QuotedString | LiteralString | Nil | ParenList


def _show(b: bytes) -> str:
    """A short, printable excerpt of client octets for an error reason."""
    text = b[:24].decode("ascii", "replace")
    return "".join(c if " " <= c <= "~" else "?" for c in text)


class Reader:
    """Cursor over ``Command.fragments`` (lines at even indexes, literal payloads between)."""

    def __init__(self, fragments: Sequence[bytes], tag: str | None = None, spooled: Sequence[int] = ()) -> None:
        if not fragments or len(fragments) % 2 == 0:
            raise ParseError("malformed command framing", tag)
        self._frags = fragments
        self._spooled = tuple(spooled)  # indexes of the fragments passed on (events.Command)
        self._i = 0
        self.line = fragments[0]
        self.pos = 0
        self.tag = tag
        self.depth = 0

    # --- position --------------------------------------------------------------------------

    def error(self, reason: str) -> ParseError:
        return ParseError(reason, self.tag)

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self._i == len(self._frags) - 1

    def at_line_end(self) -> bool:
        return self.pos >= len(self.line)

    def peek(self) -> int | None:
        return self.line[self.pos] if self.pos < len(self.line) else None

    def peek_is(self, text: bytes) -> bool:
        """Case-insensitive look-ahead."""
        return self.line[self.pos : self.pos + len(text)].upper() == text.upper()

    def end(self) -> None:
        if not self.at_end():
            rest = self.line[self.pos :]
            raise self.error(f"unexpected text at end of command: {_show(rest)!r}" if rest else "unexpected literal")

    def sp(self) -> None:
        if self.peek() != _SP:
            raise self.error("expected a space" if not self.at_end() else "missing argument")
        self.pos += 1

    def try_sp(self) -> bool:
        if self.peek() == _SP:
            self.pos += 1
            return True
        return False

    def expect(self, text: bytes) -> None:
        if not self.peek_is(text):
            raise self.error(f"expected {text.decode()!r}")
        self.pos += len(text)

    def try_take(self, text: bytes) -> bool:
        if self.peek_is(text):
            self.pos += len(text)
            return True
        return False

    def enter(self) -> None:
        """One more level of nesting (rule 2)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error("nested too deeply")

    def leave(self) -> None:
        self.depth -= 1

    # --- terminals -------------------------------------------------------------------------

    def run(self, allowed: frozenset[int]) -> bytes:
        start = self.pos
        line = self.line
        n = len(line)
        p = start
        while p < n and line[p] in allowed:
            p += 1
        self.pos = p
        return line[start:p]

    def atom(self, what: str = "atom") -> str:
        b = self.run(ATOM_CHARS)
        if not b or self._eight_bit_follows():
            raise self.error(self._expected(what))
        return b.decode("ascii")

    def _eight_bit_follows(self) -> bool:
        c = self.peek()
        return c is not None and c >= 0x80

    def _expected(self, what: str) -> str:
        c = self.peek()
        if c is None:
            return f"missing {what}" if self.at_end() else f"expected {what}, got a literal"
        if c >= 0x80:
            return f"expected {what}, got an 8-bit octet"
        return f"expected {what}, got {_show(bytes([c]))!r}"

    def number(self, limit: int = MAX_NUMBER, what: str = "number") -> int:
        start = self.pos
        while self.pos < len(self.line) and 0x30 <= self.line[self.pos] <= 0x39:
            self.pos += 1
        digits = self.line[start : self.pos]
        if not digits:
            raise self.error(self._expected(what))
        if len(digits) > len(str(limit)) or int(digits) > limit:
            raise self.error(f"{what} out of range")
        return int(digits)

    def nz_number(self, what: str = "number") -> int:
        n = self.number(MAX_NUMBER, what)
        if n == 0:
            raise self.error(f"{what} must not be 0")
        return n

    def quoted(self) -> bytes:
        line = self.line
        if self.peek() != 0x22:
            raise self.error(self._expected("quoted string"))
        p = self.pos + 1
        out = bytearray()
        n = len(line)
        while True:
            q = p
            while q < n and line[q] not in b'"\\\x00\r':  # fast path
                q += 1
            out += line[p:q]
            if q >= n:
                raise self.error("unterminated quoted string")
            c = line[q]
            if c == 0x22:
                self.pos = q + 1
                return bytes(out)
            if c == 0:
                raise self.error("NUL in quoted string")
            if c == 0x0D:
                raise self.error("CR in quoted string")
            if q + 1 >= n or line[q + 1] not in b'"\\':
                raise self.error("bad escape in quoted string")  # RFC 3501 §9 QUOTED-CHAR
            out.append(line[q + 1])
            p = q + 2

    def literal(self, allow_binary: bool = False) -> tuple[bytes, bool]:
        """(payload, is-literal8) for a literal starting here."""
        data, binary = self.message_literal(allow_binary)
        if isinstance(data, SpooledLiteral):
            raise self.error(f"literal of {data.size} octets too long here")
        return data, binary

    def message_literal(self, allow_binary: bool = False) -> tuple[bytes | SpooledLiteral, bool]:
        """Like ``literal``, but a literal the core passed on comes back as a ``SpooledLiteral``
        (rule 1), with no NUL check: the session checks its octets."""
        binary = False
        start = self.pos
        if self.peek() == 0x7E:  # "~"
            if not allow_binary:
                raise self.error("literal8 not allowed here")
            binary = True
            self.pos += 1
        if self.peek() != 0x7B:
            self.pos = start
            raise self.error(self._expected("literal"))
        close = self.line.find(b"}", self.pos)
        inner = self.line[self.pos + 1 : close] if close >= 0 else b""
        if inner.endswith(b"+"):
            inner = inner[:-1]
        if close != len(self.line) - 1 or not inner.isdigit() or self._i + 1 >= len(self._frags):
            raise self.error("bad literal")
        index = self._i + 1
        result: bytes | SpooledLiteral
        if index in self._spooled:
            result = SpooledLiteral(self._spooled.index(index), int(inner))
        else:
            result = self._frags[index]
            if len(result) != int(inner):
                raise self.error("bad literal")  # unreachable through the framing core
            if not binary and 0 in result:
                raise self.error("NUL in literal (use literal8)")
        self._i += 2
        self.line = self._frags[self._i]
        self.pos = 0
        return result, binary

    def string(self, allow_binary: bool = False) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c in (0x7B, 0x7E):
            return self.literal(allow_binary)[0]
        raise self.error(self._expected("string"))

    def astring(self, what: str = "string") -> bytes:
        c = self.peek()
        if c == 0x22 or c == 0x7B:
            return self.string()
        b = self.run(ASTRING_CHARS)
        if not b or self._eight_bit_follows():
            raise self.error(self._expected(what))
        return b

    def nstring(self) -> bytes | None:
        if self.peek_is(b"NIL") and not self._atom_continues(3):
            self.pos += 3
            return None
        return self.string()

    def _atom_continues(self, k: int) -> bool:
        p = self.pos + k
        return p < len(self.line) and self.line[p] in ASTRING_CHARS

    def text_utf8(self, b: bytes, what: str = "string") -> str:
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not valid UTF-8") from None

    def paren_list(self, item: Callable[[], T], allow_empty: bool = True) -> list[T]:
        """``(item *(SP item))``; items parsed by ``item``."""
        self.expect(b"(")
        self.enter()
        out: list[T] = []
        if self.peek() == 0x29:
            if not allow_empty:
                raise self.error("empty list")
        else:
            out.append(item())
            while self.try_sp():
                out.append(item())
        self.expect(b")")
        self.leave()
        return out

    # --- generic tokens ----------------------------------------------------------------------

    def token(self) -> Token:
        c = self.peek()
        if c == 0x28:
            return ParenList(tuple(self.paren_list(self.token)))
        if c == 0x22:
            return QuotedString(self.quoted())
        if c in (0x7B, 0x7E) and (c == 0x7B or self.peek_is(b"~{")):
            data, binary = self.literal(allow_binary=True)
            return LiteralString(data, binary)
        if self.peek_is(b"NIL") and not self._word_continues(3):
            self.pos += 3
            return Nil()
        return Atom(self._word())

    def _word_continues(self, k: int) -> bool:
        p = self.pos + k
        return p < len(self.line) and self.line[p] in _WORD_CHARS

    def _word(self) -> str:
        """A bare word: atom chars, ``]``, wildcards, and a bracketed ``[...]`` part (which may
        hold spaces, parens and quoted strings) followed by ``<...>``."""
        start = self.pos
        line = self.line
        while self.pos < len(line):
            c = line[self.pos]
            if c == 0x5B:  # "["
                self._skip_brackets()
            elif c in _WORD_CHARS:
                self.pos += 1
            else:
                break
        if self.pos == start:
            raise self.error(self._expected("atom"))
        return line[start : self.pos].decode("ascii")

    def _skip_brackets(self) -> None:
        line = self.line
        depth = 0
        while self.pos < len(line):
            c = line[self.pos]
            if c == 0x22:
                self.quoted()
                continue
            if c >= 0x80 or c in _CTL:
                raise self.error("bad octet in brackets")
            self.pos += 1
            if c == 0x5B:
                depth += 1
                if depth > MAX_DEPTH:
                    raise self.error("nested too deeply")
            elif c == 0x5D:
                depth -= 1
                if depth == 0:
                    return
        raise self.error("unterminated [")


_WORD_CHARS: Final = LIST_CHARS | {ord("\\")}


def tokenize(fragments: Sequence[bytes], tag: str | None = None) -> list[Token]:
    """Every SP-separated value of a framed command (tag and name included)."""
    r = Reader(fragments, tag)
    out: list[Token] = []
    if r.at_end():
        return out
    out.append(r.token())
    while not r.at_end():
        r.sp()
        out.append(r.token())
    return out
