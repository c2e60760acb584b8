"""Outbound TCP connections: the relay's SMTP client connects, reads, writes and upgrades to TLS
through here, so no code outside ``net`` opens a socket (the import-linter contract "network I/O
only in net").

Rules:
1. ``connect(host, port)`` opens one TCP connection to an address (no name resolution policy
   of its own: the relay has chosen the address from MX and A/AAAA records). Failures raise
   ``OSError`` (refused, unreachable); the caller bounds the wait with its own timeout
   (``asyncio.timeout``), since its deadline (RFC 5321 §4.5.3.2) is policy, not transport.
2. ``read(n)`` returns at most ``n`` octets, ``b""`` at the end of the stream; ``write`` queues
   octets and ``drain`` waits until the transport took them (backpressure).
3. ``start_tls`` upgrades the connection as the client (RFC 3207 §4 after the peer's ``220``);
   a failed or timed-out handshake raises ``OSError`` (``ssl.SSLError`` is one) or
   ``TimeoutError``; the caller then decides (plaintext retry, or defer).
5. ``peer_chain()`` returns the certificates the server sent after ``start_tls``, leaf first, as
   DER (for DANE, RFC 7672 §3: matched against TLSA records after the handshake). Python 3.13
   has ``SSLObject.get_unverified_chain``; before it, the same method of the underlying
   ``_ssl`` object is used; failing both, the leaf alone.
4. ``close`` starts closing; ``wait_closed`` waits for it (a TLS close may raise ``OSError``,
   which callers log and ignore).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TypeAlias

_ENCODING_DER = 2  # _ssl.ENCODING_DER: Certificate.public_bytes(format) of get_unverified_chain

#: What ``start_tls`` takes: a client context from ``net.tls`` (``client_context``,
#: ``no_verify_context``).
ClientTlsContext: TypeAlias = ssl.SSLContext


class Connection:
    """One outbound connection (rules 2-4)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, n: int) -> bytes:
        return await self._reader.read(n)

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()

    async def start_tls(self, context: ClientTlsContext, server_hostname: str | None, timeout: float) -> None:
        await self._writer.start_tls(context, server_hostname=server_hostname, ssl_handshake_timeout=timeout)

    def peer_chain(self) -> list[bytes]:
        """Rule 5."""
        obj = self._writer.get_extra_info("ssl_object")
        if obj is None:
            return []
        get = getattr(obj, "get_unverified_chain", None) or getattr(
            getattr(obj, "_sslobj", None), "get_unverified_chain", None)
        if get is not None:
            chain = get() or []
            return [c if isinstance(c, bytes) else bytes(c.public_bytes(_ENCODING_DER)) for c in chain]
        leaf = obj.getpeercert(binary_form=True)
        return [leaf] if leaf else []

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()


async def connect(host: str, port: int) -> Connection:
    """Rule 1."""
    reader, writer = await asyncio.open_connection(host, port)
    return Connection(reader, writer)


async def connect_unix(path: str) -> Connection:
    """Rule 1 for a local stream socket (a milter's ``unix:/path``)."""
    reader, writer = await asyncio.open_unix_connection(path)
    return Connection(reader, writer)
