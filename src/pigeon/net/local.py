"""Local (Unix-domain) stream sockets carrying one line per message: the transport of the control
socket (``pigeon.control``), so that no code outside ``net`` opens a socket.

Rules:
1. ``LineServer`` creates its socket file with mode 0600 (the umask is 0o177 while binding):
   only the owner of the directory's files can connect. A file already at the path (left by a
   killed server) is removed first; the caller makes sure no other server uses it (the app
   holds the data directory lock).
2. A request is a line ending in LF, at most ``max_line`` octets. A longer one is answered with
   ``too_long`` and the connection is closed: the handler never sees it, and the server never
   buffers more than ``max_line`` octets for a client.
3. Each request gets the handler's answer (one line, ending in LF), in order, on the same
   connection; the client may send several. A last line without LF before the end of the
   stream is still a request.
4. A connection that fails ends alone (logged at debug); the server goes on.
5. ``request`` is the client: connect, send one line, read one line back (blocking, for the
   command line). ``NotListening`` when no server listens at the path (no file, or refused);
   ``AnswerTooLong`` past ``max_line``; ``b""`` when the server closed without answering.
   Timeouts raise ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

LineHandler = Callable[[bytes], Awaitable[bytes]]
RECV_SIZE = 65536  # one read of the client's answer


class NotListening(Exception):
    """No server listens at the socket path (rule 5)."""


class AnswerTooLong(Exception):
    """The server's answer passed ``max_line`` octets (rule 5)."""


class LineServer:
    """Serve one line per request on a Unix socket (rules 1-4)."""

    def __init__(self, path: Path, handler: LineHandler, max_line: int, too_long: bytes) -> None:
        self.path = path
        self.handler = handler
        self.max_line = max_line
        self.too_long = too_long
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)  # rule 1
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=self.max_line)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):  # rule 2
                    writer.write(self.too_long)
                    break
                if not line:
                    break
                writer.write(await self.handler(line))
                await writer.drain()
        except (ConnectionError, OSError) as exc:  # rule 4
            log.debug("local socket %s: %s", self.path, exc)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


def request(path: Path, line: bytes, timeout: float, max_line: int) -> bytes:
    """Rule 5: send ``line`` (ending in LF) and return the answer line (``b""`` if none)."""
    if not path.exists():
        raise NotListening(str(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise NotListening(str(path)) from exc
        sock.sendall(line)
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(RECV_SIZE)
            if not chunk:
                break
            buf += chunk
            if len(buf) > max_line:
                raise AnswerTooLong(f"answer longer than {max_line} octets")
    finally:
        sock.close()
    return bytes(buf)
