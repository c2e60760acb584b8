"""Exceptions of the sans-IO IMAP core (the one exception tree of this layer).

Rules:
1. ``ParseError``: the client's command is syntactically wrong. It carries the tag (when one could
   be read) and a short human reason; the session answers ``tag BAD reason`` (RFC 3501 §7.1.3).
   The reason never contains the client's octets verbatim beyond a short, sanitised excerpt.
2. ``CharsetError``: SEARCH named a charset we do not support; the session answers
   ``tag NO [BADCHARSET (UTF-8 US-ASCII)]`` (RFC 3501 §6.4.4). It is a ``ParseError`` subclass so a
   session that does not care still answers something sensible, but the status should be NO.
3. ``SeqSetError`` / ``MUtf7Error``: value errors of those codecs, raised by their functions;
   the parser converts them into ``ParseError``.
4. ``LocalProtocolError``: the application misused the core (``expect_line`` in mid-command,
   ``receive_data`` after EOF). A bug on our side, never caused by the peer.
"""

from __future__ import annotations


class ImapProtocolError(Exception):
    """Base of the IMAP core exceptions."""


class ParseError(ImapProtocolError):
    """A command that does not follow the grammar; answer ``tag BAD reason``."""

    def __init__(self, reason: str, tag: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag


class CharsetError(ParseError):
    """SEARCH CHARSET we do not support; answer ``NO [BADCHARSET (...)]`` (RFC 3501 §6.4.4)."""

    def __init__(self, charset: str, tag: str | None = None) -> None:
        super().__init__(f"unsupported charset {charset[:40]!r}", tag)
        self.charset = charset


class SeqSetError(ImapProtocolError, ValueError):
    """A malformed sequence set, or one that names messages that do not exist."""


class MUtf7Error(ImapProtocolError, ValueError):
    """A mailbox name that is not valid modified UTF-7 (RFC 3501 §5.1.3)."""


class LocalProtocolError(ImapProtocolError):
    """The application used the core out of sequence."""
