"""One accepted connection as the reader and the writer a ``Stream`` uses, in one asyncio protocol.

``asyncio.start_server`` gives each connection a ``StreamReader``, a ``StreamReaderProtocol``
and a ``StreamWriter``: three objects, a buffer that copies each read twice, and five Python
calls between the socket and the session for every line a client sends. ``Channel`` is those
three in one object with the same surface (``read``, ``write``, ``drain``, ``close``,
``wait_closed``, ``start_tls``, ``get_extra_info``, ``transport``), made by
``loop.create_server``; ``Stream`` (``net.listener``) runs on either. What it saves, measured:
docs/benchmarks.md, "the SMTP session side" (2026-12-07/08).

Rules:
1. ``read(n)``: up to ``n`` buffered octets, waiting for some when there are none; ``b""`` at
   end of input; the connection's error (a reset) once the connection is lost with one, as
   ``StreamReader.read`` does. One reader at a time (``RuntimeError`` otherwise).
2. Back-pressure: past ``limit`` buffered octets the transport stops reading the socket; it
   reads again once a ``read`` left at most half of that (``net.driver`` rule 2 counts on it).
3. ``write`` hands the octets to the transport; ``drain`` waits while the transport's buffer
   is over its high-water mark, and raises ``ConnectionResetError`` once the connection is lost.
4. End of input keeps the connection open for writing on plain TCP (the replies still due
   go out after the client's half-close), as ``StreamReaderProtocol`` does; over TLS the
   TLS layer decides.
5. ``start_tls`` upgrades the connection in place (``loop.start_tls``): the channel stays the
   application protocol, ``transport`` becomes the TLS one. Octets buffered before are the
   caller's to drop: ``Stream.start_tls`` clears ``_buffer``, as it does a ``StreamReader``'s
   (RFC 3207 §4.2, the CVE-2011-0411 class).
6. ``on_connect`` (the listener) gets the channel when the connection is made and returns the
   session task; the channel keeps it until the connection is lost (a task nobody else holds
   could be collected while it waits).

7. Receiving: the transport reads into a buffer the channel lends it (``asyncio.BufferedProtocol``)
   and the channel copies what arrived into its own. A plain ``Protocol`` gets a new ``bytes``
   from each ``recv`` of up to 256 KiB, which glibc may serve with an ``mmap``, an ``mremap``
   and a ``munmap`` per read (three system calls and page faults for every line a client
   sends, depending on the process's malloc history: measured, 2026-12-08). The lent buffer
   can be one for many channels (the listener's): the transport hands it back in the same
   call (``get_buffer``, ``recv_into``, ``buffer_updated``; the TLS layer likewise), and the
   event loop runs one callback at a time.

What can go wrong: nothing raises out of the protocol callbacks; the loop reports an exception
that escapes a session task (``callback`` below), as ``start_server`` did.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol, cast

log = logging.getLogger(__name__)


class Reader(Protocol):
    """What ``Stream`` reads from: a ``StreamReader`` or a ``Channel``."""

    async def read(self, n: int) -> bytes: ...


class WriteBuffer(Protocol):
    def get_write_buffer_size(self) -> int: ...


class Writer(Protocol):
    """What ``Stream`` writes to: a ``StreamWriter`` or a ``Channel``."""

    @property
    def transport(self) -> WriteBuffer: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    async def start_tls(self, sslcontext: ssl.SSLContext, *,
                        ssl_handshake_timeout: float | None = None) -> None: ...


#: Rule 7: the size of a receive buffer made for a channel that is given none (the listeners
#: share one of ``READ_SIZE``, ``net.listener``).
RECEIVE_SIZE = 65536


class Channel(asyncio.BufferedProtocol):
    """Reader, protocol and writer of one connection (see the module rules)."""

    def __init__(self, on_connect: Callable[[Channel], asyncio.Task[None]], limit: int,
                 receive: memoryview | None = None) -> None:
        self._on_connect = on_connect
        self._receive = receive if receive is not None else memoryview(bytearray(RECEIVE_SIZE))
        self._limit = limit  # rule 2
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)  # set by connection_made
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None  # a read waiting for input
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._over_ssl = False
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._over_ssl = transport.get_extra_info("sslcontext") is not None
        task = self._task = self._on_connect(self)
        task.add_done_callback(self._done)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._receive  # rule 7

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._receive[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        buf = self._buffer
        buf += data
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(buf) > self._limit and not self._reading_paused:
            self._reading_paused = True  # rule 2
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return not self._over_ssl  # rule 4

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is None:
            self._eof = True
        else:
            self._error = exc
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            if exc is None:
                drain.set_result(None)
            else:
                drain.set_exception(exc)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._task = None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._loop.call_exception_handler({
                "message": "Unhandled exception in a session task", "exception": exc,
                "transport": self.transport})
            self.transport.close()

    # -- the reader (rule 1) ---------------------------------------------------------------------

    async def read(self, n: int) -> bytes:
        if self._error is not None:
            raise self._error
        buf = self._buffer
        if not buf and not self._eof:
            if self._waiter is not None:
                raise RuntimeError("read() called while another read is waiting for input")
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            if self._error is not None:
                raise self._error
        if len(buf) <= n:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        if self._reading_paused and len(buf) <= self._limit // 2:
            self._reading_paused = False  # rule 2
            self.transport.resume_reading()
        return data

    # -- the writer (rule 3) ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        if self._error is not None:
            raise self._error
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    async def wait_closed(self) -> None:
        if self._lost:
            return
        if self._closed is None:
            self._closed = self._loop.create_future()
        await self._closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    async def start_tls(self, sslcontext: ssl.SSLContext, *, ssl_handshake_timeout: float | None = None) -> None:
        """Rule 5."""
        transport = await self._loop.start_tls(self.transport, self, sslcontext, server_side=True,
                                               ssl_handshake_timeout=ssl_handshake_timeout)
        if transport is None:  # pragma: no cover - only when the connection closed meanwhile
            raise ConnectionResetError("Connection lost during the TLS handshake")
        self.transport = transport
        self._over_ssl = True
