"""Exceptions of the sans-IO POP3 core (the one exception tree of this layer).

Rules:
1. ``LocalProtocolError``: the application misused the core (sent a response when none was
   due, a multi-line response to a command that takes none, ``start_tls`` at the wrong time).
   A bug on our side.
2. Peer mistakes never raise: the core answers them itself with ``-ERR`` and emits
   ``CommandRejected``.
"""

from __future__ import annotations


class Pop3ProtocolError(Exception):
    """Base of the POP3 core exceptions."""


class LocalProtocolError(Pop3ProtocolError):
    """The application used the core out of sequence."""
