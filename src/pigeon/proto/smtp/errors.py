"""Exceptions of the sans-IO SMTP cores (the one exception tree of this layer).

Rules:
1. ``LocalProtocolError``: the application misused a core (sent a reply when none was due,
   called ``start_tls`` at the wrong time, sent message data outside DATA). A bug on our side.
2. ``RemoteProtocolError``: the peer broke framing in a way no reply can repair (a malformed
   reply line seen by the client role). Peer mistakes that a reply can answer never raise: the
   server core turns them into replies (``CommandRejected``).
"""

from __future__ import annotations


class SmtpProtocolError(Exception):
    """Base of the SMTP core exceptions."""


class LocalProtocolError(SmtpProtocolError):
    """The application used the core out of sequence."""


class RemoteProtocolError(SmtpProtocolError):
    """The peer broke the framing of the protocol."""
