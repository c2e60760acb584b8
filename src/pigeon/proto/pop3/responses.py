"""POP3 responses as values: ``+OK``/``-ERR`` lines, multi-line bodies, SASL continuations.

Rules:
1. A status line is ``+OK text`` or ``-ERR [CODE] text`` ending in CRLF (RFC 1939 §3). Response
   codes (RFC 2449 §8) go in square brackets right after the status indicator; Pigeon uses
   ``IN-USE``, ``LOGIN-DELAY`` (RFC 2449 §8.1), ``AUTH`` and ``SYS/TEMP``/``SYS/PERM``
   (RFC 3206).
2. The first line of a response is at most ``MAX_RESPONSE_LINE`` octets with CRLF (RFC 2449 §4);
   longer text is cut. Text never contains CR or LF (replaced by spaces).
3. A multi-line body is dot-stuffed (RFC 1939 §3): every line that starts with ``.`` gets one
   more ``.``, and the body ends with ``.`` CRLF. A body that does not end in CRLF gets one.
   A "line" starts after *any* LF, so a message holding a bare LF can never end the response
   early for a client that splits on LF alone.
4. Sizes given to clients (STAT, LIST) are counted before dot-stuffing (RFC 1939 §5, §11).
5. A SASL continuation is ``+ base64`` CRLF (RFC 5034 §4), ``+ `` with an empty challenge.

What can go wrong: ``MultiLine`` with a negative status raises ValueError (a bug of the caller).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# RFC 2449 §4: "The maximum length of the first line of a response is increased to 512
# octets, including the terminating CRLF."
MAX_RESPONSE_LINE = 512
TERMINATOR = b".\r\n"  # RFC 1939 §3: the end of a multi-line response


@dataclass(frozen=True, slots=True)
class Response:
    """A single-line response (rule 1)."""

    ok: bool
    text: str = ""
    code: str | None = None  # RFC 2449 §8 response code, without brackets

    def to_bytes(self) -> bytes:
        head = "+OK" if self.ok else "-ERR"
        parts = [head]
        if self.code:
            parts.append(f"[{self.code}]")
        if self.text:
            parts.append(self.text.replace("\r", " ").replace("\n", " "))
        line = " ".join(parts).encode("utf-8")
        limit = MAX_RESPONSE_LINE - 2  # rule 2
        if len(line) > limit:
            line = line[:limit].decode("utf-8", "ignore").encode("utf-8")
        return line + b"\r\n"

    def with_text(self, text: str) -> Response:
        return Response(self.ok, text, self.code)

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8").rstrip("\r\n")


@dataclass(frozen=True, slots=True)
class MultiLine:
    """``+OK`` followed by a body (already CRLF-terminated lines, not yet dot-stuffed)."""

    first: Response
    body: bytes

    def __post_init__(self) -> None:
        if not self.first.ok:
            raise ValueError("a multi-line response starts with +OK (RFC 1939 §3)")

    @classmethod
    def of_lines(cls, first: Response, lines: Iterable[str]) -> MultiLine:
        return cls(first, b"".join(line.encode("utf-8") + b"\r\n" for line in lines))

    def to_bytes(self) -> bytes:
        return self.first.to_bytes() + dot_stuff(self.body)


@dataclass(frozen=True, slots=True)
class Continuation:
    """A SASL challenge (rule 5); ``text`` is already base64 (may be empty)."""

    text: str = ""

    def to_bytes(self) -> bytes:
        return f"+ {self.text}\r\n".encode("ascii")


AnyResponse = Response | MultiLine | Continuation


def dot_stuff(body: bytes) -> bytes:
    """Rule 3: the body of a multi-line response, stuffed and terminated."""
    # A dot is added before every dot that starts a line: after each LF, and at the very start.
    # Plain searches, not a regex (that cost more than the rest of a RETR): most messages have
    # no line starting with a dot.
    stuffed = body.replace(b"\n.", b"\n..") if b"\n." in body else body
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + TERMINATOR


def capabilities(*, user: bool, sasl: Iterable[str], stls: bool, implementation: str | None = None) -> list[str]:
    """The CAPA list (RFC 2449 §5, §6). ``user``/``sasl`` only when the login may be used on
    this connection now; ``stls`` only while an upgrade is possible (RFC 2595 §4)."""
    lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]  # RFC 2449 §6.4-6.8, RFC 3206 §6
    if user:
        lines.append("USER")
    mechanisms = " ".join(sasl)
    if mechanisms:
        lines.append(f"SASL {mechanisms}")  # RFC 5034 §5
    if stls:
        lines.append("STLS")  # RFC 2595 §4
    if implementation:
        lines.append(f"IMPLEMENTATION {implementation}")  # RFC 2449 §6.9
    return lines


# Named responses (RFC 1939 §3-§7, RFC 2449 §8, RFC 3206, RFC 5034, RFC 2595).
OK = Response(True)
ERR_UNKNOWN_COMMAND = Response(False, "Unknown command")
ERR_SYNTAX = Response(False, "Syntax error in arguments")
ERR_LINE_TOO_LONG = Response(False, "Line too long")
ERR_BAD_SEQUENCE = Response(False, "Command not valid in this state")
ERR_PASS_WITHOUT_USER = Response(False, "PASS must follow a successful USER")
ERR_NO_SUCH_MESSAGE = Response(False, "No such message")
ERR_MESSAGE_DELETED = Response(False, "Message already deleted")
ERR_IN_USE = Response(False, "Maildrop already locked by another POP3 session", "IN-USE")  # RFC 2449 §8.1.1
ERR_AUTH_FAILED = Response(False, "Authentication failed", "AUTH")  # RFC 3206 §4
ERR_SYS_TEMP = Response(False, "Temporary system problem, try again later", "SYS/TEMP")  # RFC 3206 §5
ERR_THROTTLED = Response(False, "Too many authentication failures, try again later", "SYS/TEMP")
ERR_TLS_REQUIRED = Response(False, "Plaintext authentication disallowed before STLS")
ERR_TLS_UNAVAILABLE = Response(False, "STLS not available")  # RFC 2595 §4
ERR_TLS_ACTIVE = Response(False, "Already using TLS")
ERR_AUTH_MECHANISM = Response(False, "Unrecognized authentication mechanism")
ERR_AUTH_CANCELLED = Response(False, "Authentication cancelled")  # RFC 5034 §4
ERR_AUTH_MALFORMED = Response(False, "Cannot decode the authentication response")
ERR_TOO_MANY_ERRORS = Response(False, "Too many bad commands, closing connection")
ERR_SHUTTING_DOWN = Response(False, "Server shutting down", "SYS/TEMP")
ERR_NOT_REMOVED = Response(False, "Some deleted messages not removed", "SYS/TEMP")  # RFC 1939 §6
