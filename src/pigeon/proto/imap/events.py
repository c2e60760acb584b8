"""Framing events of the IMAP server core (``connection.ImapServerConnection.next_event``).

Rules:
1. Every event is a frozen dataclass with slots: a plain value. A ``Command`` may hold a LOGIN
   password or an APPENDed message, and a ``RawLine`` may be a SASL response: their ``repr`` hides
   the octets, so logging an event never leaks a secret.
2. ``Command.fragments`` alternates line text and literal payloads: ``(line0, literal0, line1, ...,
   lineN)``, always an odd count. Each line fragment is without its CRLF; every line but the last
   ends with the literal announcement (``{n}``, ``{n+}``, ``~{n}``) whose payload follows. The
   parser (``parser.parse_command``) reads this structure; nobody else needs to.
3. The events that need an answer from the session: ``Command`` (the command's responses),
   ``NeedContinuation`` (``+ Ready``, or a tagged NO/BAD that ends the command: RFC 3501 §7.5),
   ``LiteralTooBig`` (``tag NO [TOOBIG]`` or ``tag BAD``; RFC 7888 §4, RFC 9051 §7.1),
   ``BadCommand`` (``tag BAD reason``, or ``* BAD`` when ``tag`` is None). ``RawLine`` is the
   reply to a continuation the session asked for with ``expect_line()``.
4. ``LiteralData`` carries, piece by piece, an APPEND literal the core does not keep
   (``connection`` rule 4); the session stores the pieces in order. The ``Command`` that follows
   has ``b""`` in that literal's place and lists its index in ``spooled``. Its ``repr`` hides the
   octets too.
5. ``ConnectionClosed.reason`` is None when the peer closed; otherwise the core stopped reading
   (``connection`` rule 3: a refused non-synchronising literal before authentication) and the
   session says ``* BYE reason`` and closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Command:
    """One complete command as framed on the wire (literals already read)."""

    tag: str
    name: str  # the command word upper-cased ("UID" for UID commands); "" if the line had none
    fragments: tuple[bytes, ...] = field(repr=False)
    #: Indexes in ``fragments`` of literals passed on as ``LiteralData`` (their fragment is b"").
    spooled: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Octets held by this command (lines + literal payloads)."""
        return sum(len(f) for f in self.fragments)


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """A synchronising literal ``{n}`` was announced: send ``+ ...`` to get its octets."""

    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class LiteralTooBig:
    """A literal over the limit was announced; its octets are not read (a synchronising literal)
    or are skipped (non-synchronising: the client sends them anyway). The rest of the command is
    discarded by the core."""

    tag: str
    size: int
    synchronizing: bool


@dataclass(frozen=True, slots=True)
class LiteralData:
    """A piece of an APPEND literal that the core does not keep (rule 4); ``last`` on the final
    piece of that literal. The pieces of one literal come in order, before its ``Command``."""

    tag: str
    data: bytes = field(repr=False)
    last: bool = False


@dataclass(frozen=True, slots=True)
class BadCommand:
    """Broken framing: a line over the limit, a command over the total limit, or no valid tag.
    The core has resynchronised (or will, at the next CRLF that ends the command)."""

    tag: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RawLine:
    """The line asked for by ``expect_line()`` (AUTHENTICATE response, IDLE's ``DONE``), no CRLF."""

    line: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """No further event can come: the peer closed its side (``reason`` None), or the core
    refused to read on (rule 5)."""

    reason: str | None = None


ImapEvent = Command | NeedContinuation | LiteralTooBig | LiteralData | BadCommand | RawLine | ConnectionClosed
