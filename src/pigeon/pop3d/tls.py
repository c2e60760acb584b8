"""Upgrading a listener ``Stream`` to TLS in place: STLS (RFC 2595 §4) and implicit TLS (pop3s).

``net.listener.Stream`` has no ``start_tls`` yet; this wraps asyncio's
``StreamWriter.start_tls`` (server side, since the stream came from ``start_server``) until it
has one (the code proposed for ``Stream.start_tls`` is in the POP3 helper's report).

Rules:
1. Octets the client sent before the handshake are discarded, both those the protocol core
   buffered (``ServerConnection.start_tls``) and those still in asyncio's read buffer
   (CVE-2011-0411 class): nothing sent in clear is read as if it came over TLS.
2. The handshake has its own timeout (``handshake_timeout``); a failed handshake raises
   ``TlsHandshakeFailed`` and the session ends without another byte written.

What can go wrong: ``TlsHandshakeFailed`` (wrapping ``ssl.SSLError``, ``OSError``,
``ConnectionError`` or ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from pigeon.net.listener import Stream

log = logging.getLogger(__name__)


class TlsHandshakeFailed(Exception):
    """The TLS handshake did not finish."""


def _drop_buffered(reader: asyncio.StreamReader) -> int:
    """Rule 1: drop what asyncio already read from the socket. ``_buffer`` is the reader's
    private bytearray (CPython 3.11-3.13); without it there is nothing we can reach."""
    buffer = getattr(reader, "_buffer", None)
    if isinstance(buffer, bytearray) and buffer:
        dropped = len(buffer)
        buffer.clear()
        return dropped
    return 0


async def upgrade(stream: Stream, context: ssl.SSLContext, handshake_timeout: float) -> None:
    """Run the server side of a TLS handshake on ``stream`` (rules 1 and 2)."""
    try:
        await stream.writer.drain()
        # No await between here and start_tls pausing the transport: nothing new can arrive.
        dropped = _drop_buffered(stream.reader)
        if dropped:
            log.warning("tls: discarded %d octets sent before the handshake client=%s", dropped, stream.peer_ip)
        await stream.writer.start_tls(context, ssl_handshake_timeout=handshake_timeout)
    except (ssl.SSLError, OSError, ConnectionError, TimeoutError) as exc:
        raise TlsHandshakeFailed(str(exc) or type(exc).__name__) from exc
