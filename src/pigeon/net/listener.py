"""TCP listeners: accept connections, enforce connection limits, run one session task each.

Rules:
1. This module and its siblings are the only place with sockets (DESIGN.md); sessions see a
   ``Stream`` with bounded reads and an inactivity timeout.
2. Connection limits are checked the moment a connection is accepted, before any TLS handshake
   and before any session state exists, against one ``ConnectionGate`` that every listener of
   the process shares: more than ``max_connections`` in total over all services, or more than
   ``max_connections_per_ip`` from one address, gets the service's "too many connections" answer
   (SMTP ``421 4.7.0``; nothing on an implicit-TLS port, where a clear-text answer would be
   noise) and is closed at once. Worker processes each have their own gate (per-process limits).
3. Implicit TLS (465, 993, 995) is handshaken here, after the connection is counted, within
   ``TLS_HANDSHAKE_TIMEOUT``; a client that does not finish it in time is closed.
4. A line must arrive whole within ``line_timeout`` of its first octet (``Stream``): a client
   that trickles one octet every few seconds resets the inactivity timeout on every read, but
   not this one (Postfix's ``smtpd_per_record_deadline``). It raises ``LineTimeout``, a
   ``TimeoutError``, so sessions end it as they end an idle one.
5. ``EMFILE``/``ENFILE`` at accept: asyncio already stops accepting on that socket for a second;
   ``quiet_accept_errors`` makes its log line one per interval instead of one per attempt.
7. A listening socket shared by several processes (``[imap]``/``[pop3] processes``) is served
   with a ``board`` (``net.loadboard``: each process's session count, in shared memory) and
   this module's own accept loop instead of asyncio's: one connection per wake-up, and a
   process with more sessions than another (``LoadBoard.busier``) declines the connection
   for ``loadboard.DECLINE_PAUSE``, so that the other takes it (``loadboard.SharedAccept``);
   one still waiting after the pause is taken (the other process is busy or stuck). Without it, the process that wakes
   first took every connection of a burst (asyncio accepts up to its backlog per wake-up;
   even one per wake-up left 43 of 50 benchmark sessions in one process): one account's
   sessions then ran on one core. SMTP keeps asyncio's loop: its sessions are short.
6. ``stop`` closes the listening sockets first (no new sessions), then asks every session to
   finish (``Session.shutdown``), waits a grace period, and cancels what is left. A session that
   is cancelled has not acknowledged anything it has not committed, so nothing accepted is lost.

What can go wrong: a bind failure raises ``OSError`` from ``start`` (the app reports it and exits).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pigeon.net.channel import Channel, Reader, Writer
from pigeon.net.loadboard import LoadBoard, SharedAccept
from pigeon.net.tls import tls_info

log = logging.getLogger(__name__)

T = TypeVar("T")
_READ, _WRITE = 0, 1  # the watchdog's slots (Stream)

READ_SIZE = 65536  # one read at most; the protocol cores bound what they buffer
BACKLOG = 1024  # the kernel's queue of connections not yet accepted (Postfix's default is 100+)
# A TLS handshake is a few round trips: well under a second on a fast link, a few seconds on a
# slow mobile one. 10 s bounds how long a silent client holds a connection slot (and the memory
# of a TLS object) before saying anything; asyncio's default is 60.
TLS_HANDSHAKE_TIMEOUT = 10.0
# Accept errors (EMFILE and the like) are logged at most once per this many seconds.
ACCEPT_ERROR_LOG_INTERVAL = 10.0



def _format(name: object) -> str:
    if isinstance(name, tuple) and len(name) >= 2:
        host, port = str(name[0]), int(name[1])
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(name)


class StreamClosed(Exception):
    """The peer went away or the inactivity timeout expired."""


class LineTimeout(TimeoutError):
    """A line did not arrive whole within the stream's ``line_timeout`` (rule 4)."""


class Stream:
    """A connection as sessions see it: read with a timeout, write, close, TLS upgrade.

    The inactivity timeout is one lazy watchdog per stream, not an ``asyncio.timeout`` per
    read and write (that costs a timer handle, a context manager and a cancel per call, on
    every line of every session). A read and a write may wait at the same time, in two tasks
    (IMAP IDLE reads in a task of its own while the session writes updates), so each has its own
    slot with its own deadline; the one timer, when it fires, cancels a wait still pending past
    its deadline (turned into ``TimeoutError``, the semantics of ``asyncio.timeout``) and
    re-arms itself at the earliest deadline left.
    """

    def __init__(self, reader: Reader, writer: Writer, timeout: float,
                 line_timeout: float | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        # Rule 4: when the octets after the last line feed started to arrive (None: no partial
        # line pending), and how long a line may take from there.
        self.line_timeout = line_timeout
        self._partial_since: float | None = None
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        self.peer_ip: str = str(peer[0]) if peer else "unknown"
        self.peer_port: int = int(peer[1]) if peer else 0
        self.local_ip: str = str(sock[0]) if sock else "unknown"
        self.local_port: int = int(sock[1]) if sock else 0
        # Told the TLS version of each handshake that succeeds (the metrics, pigeon.web.metrics).
        self.on_tls: Callable[[str], None] | None = None
        # Slots _READ and _WRITE: (the waiting task, its deadline), or None; and whether the
        # watchdog cancelled that slot's wait.
        self._waits: list[tuple[asyncio.Task[object] | None, float] | None] = [None, None]
        self._expired = [False, False]
        self._timer: asyncio.TimerHandle | None = None
        # The stream's loop, looked up once: on Python 3.11 every get_running_loop() (and so
        # every current_task()) is a getpid() system call, and _guarded runs on every read.
        self._loop: asyncio.AbstractEventLoop | None = None

    def _check(self) -> None:
        """The watchdog: cancel each wait past its deadline, then sleep until the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for slot, wait in enumerate(self._waits):
            if wait is None:
                continue
            task, deadline = wait
            if now >= deadline:
                self._waits[slot] = None
                self._expired[slot] = True
                if task is not None:
                    task.cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._check)

    async def _guarded(self, wait: Awaitable[T], slot: int, deadline: float | None = None) -> T:
        """Await ``wait`` under the watchdog in ``slot``; its expiry becomes ``TimeoutError``.

        ``deadline`` (loop time), when given, replaces ``now + timeout``. The slot is cleared
        however the wait ends (data, EOF, a reset, a cancel), so the timer can never cancel the
        task later, in code that is not waiting on this stream.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if deadline is None:
            deadline = loop.time() + self.timeout
        self._waits[slot] = (task, deadline)
        self._expired[slot] = False
        timer = self._timer
        if timer is None:
            self._timer = loop.call_at(deadline, self._check)
        elif timer.when() > deadline:  # a line deadline can come before the armed idle one
            timer.cancel()
            self._timer = loop.call_at(deadline, self._check)
        # else the timer fires no later than this deadline and re-arms
        try:
            return await wait
        except asyncio.CancelledError:
            if self._expired[slot] and task is not None:
                self._expired[slot] = False
                if task.uncancel() == 0:  # the watchdog's cancel, and nobody else's
                    raise TimeoutError from None
            raise
        finally:
            self._waits[slot] = None

    async def read(self) -> bytes:
        """Up to READ_SIZE bytes; b"" at EOF. Raises TimeoutError after ``timeout`` seconds idle,
        ``LineTimeout`` when a line started more than ``line_timeout`` ago is still not whole."""
        partial = self._partial_since
        if partial is None or self.line_timeout is None:
            data = await self._guarded(self.reader.read(READ_SIZE), _READ)
        else:
            loop = self._loop or asyncio.get_running_loop()
            line_deadline = partial + self.line_timeout
            idle_deadline = loop.time() + self.timeout
            try:
                data = await self._guarded(self.reader.read(READ_SIZE), _READ,
                                           min(line_deadline, idle_deadline))
            except TimeoutError:
                if line_deadline < idle_deadline:
                    raise LineTimeout(f"no complete line within {self.line_timeout:.0f}s") from None
                raise
        if data and self.line_timeout is not None:
            last = data.rfind(b"\n")
            if last == len(data) - 1:
                self._partial_since = None  # every line it brought is whole
            elif last >= 0 or partial is None:
                self._partial_since = (self._loop or asyncio.get_running_loop()).time()
        return data

    async def write(self, data: bytes) -> None:
        if not data:
            return
        writer = self.writer
        writer.write(data)
        if writer.transport.get_write_buffer_size() == 0 and not writer.is_closing():
            return  # all sent at once (the usual case for a reply): nothing to wait for
        await self._guarded(writer.drain(), _WRITE)

    def write_nowait(self, data: bytes) -> None:
        if data and not self.writer.is_closing():
            self.writer.write(data)

    @property
    def tls_active(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    async def start_tls(self, context: ssl.SSLContext, timeout: float = TLS_HANDSHAKE_TIMEOUT) -> int:
        """Upgrade to TLS as the server (STARTTLS, RFC 3207; STLS, RFC 2595; implicit TLS).

        Octets the client sent before the handshake and that are still in the reader's buffer
        are dropped first: they were sent in the clear and must not be read as if they came
        over TLS (RFC 3207 §4.2, the CVE-2011-0411 class). The protocol core drops what it
        had buffered itself (``net.driver`` rule 7). Pending output is drained before, so that
        nothing waits between the drop and the handshake pausing the reads: no octet can
        arrive in between. Returns the number of octets dropped. Raises
        ``ssl.SSLError``/``OSError``/``TimeoutError`` on failure.
        """
        writer = self.writer
        if writer.transport.get_write_buffer_size():
            await self._guarded(writer.drain(), _WRITE)
        dropped = 0
        buffered = getattr(self.reader, "_buffer", None)  # a Channel or a StreamReader: a bytearray
        if isinstance(buffered, bytearray):
            dropped = len(buffered)
            buffered.clear()
        await writer.start_tls(context, ssl_handshake_timeout=timeout)
        if self.on_tls is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            self.on_tls(str(ssl_object.version() or "unknown") if ssl_object is not None else "unknown")
        return dropped

    @property
    def tls_info(self) -> str | None:
        return tls_info(self.writer.get_extra_info("ssl_object"))

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waits = [None, None]
        try:
            if not self.writer.is_closing():
                self.writer.close()
            if self.writer.transport.get_write_buffer_size() == 0 and not self.tls_active:
                return  # nothing left to send: the socket closes in the loop's next turn
            async with asyncio.timeout(5):
                await self.writer.wait_closed()
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.debug("close: %s", exc)


class Session(Protocol):
    async def run(self) -> None: ...

    def shutdown(self) -> None:
        """Finish soon: answer the current command, then say goodbye (SMTP 421 4.3.2)."""


SessionFactory = Callable[[Stream], Session]


class Limits(Protocol):
    """What a listener reads of the limits at each accept (``config.Limits`` is one)."""

    @property
    def max_connections(self) -> int: ...
    @property
    def max_connections_per_ip(self) -> int: ...
    @property
    def session_timeout(self) -> float: ...
    @property
    def line_timeout(self) -> float | None: ...


@dataclass(frozen=True)
class ConnectionLimits:
    """Limits for a listener made by hand (tests, tools)."""

    max_connections: int
    max_connections_per_ip: int
    session_timeout: float
    line_timeout: float | None = None


class ConnectionGate:
    """Rule 2: the connections of every service of this process, in total and per address."""

    def __init__(self) -> None:
        self.total = 0
        self.per_ip: Counter[str] = Counter()

    def admit(self, ip: str, limits: Limits) -> bool:
        """Count a new connection from ``ip``; False (nothing counted) when over a limit."""
        if self.total >= limits.max_connections or self.per_ip[ip] >= limits.max_connections_per_ip:
            return False
        self.total += 1
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class QuietLog:
    """A warning logged at most once per ``interval`` seconds, with the count of those dropped."""

    def __init__(self, interval: float = ACCEPT_ERROR_LOG_INTERVAL, level: int = logging.WARNING) -> None:
        self.interval = interval
        self.level = level
        self._next = 0.0
        self._dropped = 0

    def log(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._dropped += 1
            return
        if self._dropped:
            msg += f" (and {self._dropped} more in the last {self.interval:.0f}s)"
        self._dropped = 0
        self._next = now + self.interval
        log.log(self.level, msg, *args)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Rule 5: asyncio reports each failed ``accept`` (EMFILE, ENFILE, ENOBUFS, ENOMEM) through
    the loop's exception handler, with a traceback, every time it retries; log it once per
    interval instead. Every other report goes to the handler that was there before."""
    previous = loop.get_exception_handler()
    quiet = QuietLog()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            quiet.log("accept failed: %s; accepting paused for a second (raise the open-file "
                          "limit or lower limits.max_connections)", exc.strerror or exc)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


def adopt_listening_sockets(fds: Sequence[int]) -> list[socket.socket]:
    """Listening sockets inherited by descriptor (a worker process gets the server's, ``app.master``),
    as socket objects for ``Listener(sockets=...)``; each then belongs to the caller, which
    closes it with the listener. Raises ``OSError`` when a descriptor is not an open listening
    stream socket (a wrong number on the command line), before any is served."""
    out: list[socket.socket] = []
    for fd in fds:
        sock = socket.socket(fileno=fd)  # ENOTSOCK, EBADF: OSError
        try:
            listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            sock.detach()
            raise
        if not listening:
            sock.detach()  # not ours to close
            raise OSError(errno.EINVAL, f"descriptor {fd} is not a listening stream socket")
        out.append(sock)
    return out


class Listener:
    def __init__(self, service: str, endpoints: list[tuple[str, int]], factory: SessionFactory,
                 limits: Callable[[], Limits], too_many: bytes,
                 tls: ssl.SSLContext | None = None,
                 sockets: list[socket.socket] | None = None,
                 gate: ConnectionGate | None = None,
                 handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT,
                 board: LoadBoard | None = None) -> None:
        self.board = board  # rule 7: a socket shared by several processes, accepted by load
        self._shared: SharedAccept | None = None  # rule 7: the accept loop with the board
        self._accept_errors = QuietLog()
        self.tls = tls  # implicit TLS: handshaken in _accept, after the connection is counted
        self.on_tls: Callable[[str], None] | None = None  # given to each Stream (the metrics)
        self.handshake_timeout = handshake_timeout
        # Listening sockets opened by another process (worker processes get the server's,
        # ``adopt_listening_sockets``): served as they are, instead of binding ``endpoints``.
        self.inherited = sockets or []
        self.service = service
        self.endpoints = endpoints
        self.factory = factory
        self.limits = limits
        self.too_many = too_many
        self.servers: list[asyncio.Server] = []
        self.sessions: dict[asyncio.Task[None], Session] = {}
        # Shared by every listener of the process (rule 2); a listener alone counts alone.
        self.gate = gate if gate is not None else ConnectionGate()
        self._receive = memoryview(bytearray(READ_SIZE))  # every channel's reads (net.channel rule 7)
        self._refusals = QuietLog()
        self._failed_handshakes = QuietLog(level=logging.INFO)

    async def start(self) -> None:
        serve = self.board is None  # rule 7: else this module's accept loop, started below
        loop = asyncio.get_running_loop()
        for sock in self.inherited:
            server = await loop.create_server(self._channel, sock=sock, backlog=BACKLOG, start_serving=serve)
            self.servers.append(server)
            log.info("listening service=%s address=%s (shared)", self.service, _format(sock.getsockname()))
        for host, port in [] if self.inherited else self.endpoints:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await loop.create_server(
                self._channel, host, port, family=family, reuse_address=True, backlog=BACKLOG,
                start_serving=serve)
            self.servers.append(server)
            log.info("listening service=%s address=%s", self.service, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if not serve:
            self._start_accepting()

    # -- rule 7: accepting by load ---------------------------------------------------------

    def _start_accepting(self) -> None:
        if self.board is not None:
            self.board.claim()
            self._shared = SharedAccept(self.board, self._accepted, self._accept_errors.log)
            self._shared.start([w for server in self.servers for w in server.sockets], BACKLOG)

    def _accepted(self, conn: socket.socket) -> None:
        asyncio.get_running_loop().create_task(self._serve_accepted(conn))

    async def _serve_accepted(self, conn: socket.socket) -> None:
        """Rule 7: a connection ``SharedAccept`` took (counted on the board), served as any
        other; the count goes down when its session ends."""
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self._channel, sock=conn)
        except OSError:
            conn.close()
            if self.board is not None:
                self.board.add(-1)

    def listening_fds(self) -> list[int]:
        """The listening sockets' descriptors, to hand to another process (``sockets=``)."""
        return [sock.fileno() for s in self.servers for sock in s.sockets]

    @property
    def bound(self) -> list[tuple[str, int]]:
        out = []
        for s in self.servers:
            for sock in s.sockets:
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    def _channel(self) -> Channel:
        """A new connection's reader and writer (``net.channel``); its session runs in a task."""
        return Channel(self._start, READ_SIZE * 2, self._receive)

    def _start(self, channel: Channel) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._accept(channel, channel))
        board = self.board
        if board is not None:  # rule 7: every connection came through SharedAccept, counted there
            task.add_done_callback(lambda _task: board.add(-1))
        return task

    async def _accept(self, reader: Reader, writer: Writer) -> None:
        limits = self.limits()
        stream = Stream(reader, writer, limits.session_timeout, limits.line_timeout)
        stream.on_tls = self.on_tls
        ip = stream.peer_ip
        gate = self.gate
        if not gate.admit(ip, limits):  # rule 2: before any handshake or session state
            self._refusals.log("too many connections service=%s client=%s total=%d from_ip=%d",
                                   self.service, ip, gate.total, gate.per_ip[ip])
            if self.tls is None:
                stream.write_nowait(self.too_many)
            await stream.close()
            return
        task = asyncio.current_task()
        try:
            if task is None:  # pragma: no cover - asyncio always runs callbacks in a task here
                return
            if self.tls is not None and not await self._handshake(stream, self.tls):
                return
            session = self.factory(stream)
            self.sessions[task] = session
            try:
                await session.run()
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("session crashed service=%s client=%s", self.service, ip)
        finally:
            gate.release(ip)
            try:
                await stream.close()
            finally:
                # After the close, so that stop() also waits for a TLS close under way.
                if task is not None:
                    self.sessions.pop(task, None)

    async def _handshake(self, stream: Stream, context: ssl.SSLContext) -> bool:
        """Rule 3: implicit TLS, within TLS_HANDSHAKE_TIMEOUT; False (logged) when it failed."""
        try:
            await stream.start_tls(context, self.handshake_timeout)
        except (ssl.SSLError, OSError, ConnectionError, TimeoutError) as exc:
            self._failed_handshakes.log("TLS handshake failed service=%s client=%s: %s", self.service, stream.peer_ip,
                     str(exc) or type(exc).__name__)
            return False
        return True

    async def stop(self, grace: float = 10.0) -> None:
        if self._shared is not None:
            self._shared.stop()
        for s in self.servers:
            s.close()
        for session in list(self.sessions.values()):
            session.shutdown()
        tasks = list(self.sessions)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        for s in self.servers:
            await s.wait_closed()

