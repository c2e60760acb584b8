"""The session driver: one read loop around a sans-IO protocol core, for SMTP, IMAP and POP3.

A session is three things: a ``Stream`` (``net.listener``), a sans-IO core (``proto.smtp``,
``proto.imap``, ``proto.pop3``: ``receive_data``, ``next_event``, ``start_tls``,
``input_buffered``) and a handler that owns the protocol's policy (``smtpd``, ``imapd``,
``pop3d``). The driver owns everything between them: reading, writing, timeouts, back-pressure,
the TLS upgrade and the end of the session. The handler only answers events::

    driver = SessionDriver(stream, core, need=NEED_DATA, output=core.data_to_send)
    await driver.run(handler)  # handler.start(); handler.handle(event) for every event; handler.finish()
    driver.shutdown()          # from the listener: answer the current command, then say goodbye

Rules:
1. Pull, never push: the driver reads only when the core has no event to give (``next_event``
   returned the ``need`` sentinel), and never while a handler runs. Before each read it writes
   what is pending, so every answer is on the wire before the server waits for the client.
2. Back-pressure follows from rule 1: what the server holds of a client's input is what the core
   keeps to finish a line or a literal (each core bounds it), one read (``READ_SIZE``) and
   the connection's buffer (``net.channel``: it stops reading the socket past
   ``2 × READ_SIZE``). A core that asks for more while holding over ``max_buffered`` octets is
   broken: the session ends with a log line instead of growing.
3. Output: the handler queues bytes with ``emit`` (or in the core, for cores with
   ``data_to_send``, passed as ``output``). Pending output is written before each read, at the
   end, and — when ``flush_at`` is set — after an event once it reaches ``flush_at`` octets, so a
   big answer (a FETCH, a pipelined RETR) never piles up in memory. Without ``flush_at`` (SMTP)
   the replies to pipelined commands go out together, in one write, when the input runs dry.
4. Timeouts are the stream's (``Stream``: the inactivity watchdog and the per-line deadline a
   trickle cannot reset). Either ends the session with ``handler.farewell(Ending.TIMEOUT)``,
   written after what was pending.
5. ``shutdown`` (the server is stopping): a session waiting for input is woken at once; a busy
   one finishes the command under way and every command already buffered, and ends when it
   would next wait for input. Either way ``handler.farewell(Ending.SHUTDOWN)`` is written after
   what was pending.
6. ``Hangup(farewell)`` raised by a handler ends the session after what was pending and then
   ``farewell`` (IMAP's ``* BYE``). A connection error (reset, broken pipe, a failed TLS
   handshake) ends it quietly (debug log). Any other exception from the handler or the core is a
   bug: it is logged with its traceback, the answers already due are written (the ``250`` of a
   committed message among them) and the session is closed; it never hangs.
7. ``start_tls`` (STARTTLS, STLS), called by the handler once its positive answer is queued:
   writes the answer, makes the core drop what it buffered (``core.start_tls()``), and the
   stream what asyncio buffered, then runs the handshake (CVE-2011-0411 class: nothing sent in
   clear is read as if it came over TLS). It refuses to run while a read is pending (``fill``
   with a wake left one). A failed handshake raises ``TlsHandshakeFailed`` (rule 6: a quiet
   end, logged at info). Implicit TLS (465, 993) is the listener's (``net.listener`` rule 3);
   ``handshake`` runs one for a session that starts its own.
8. ``fill(timeout, wake)`` waits for input or for ``wake`` (an ``asyncio.Event``) or for
   ``timeout`` seconds, whichever comes first (IMAP IDLE: the server writes updates while the
   client may send ``DONE``). A read still pending when it returns stays pending for the next
   ``fill``/``next_event``, so no input is lost; the driver cancels it at the end.
9. ``handler.finish`` runs however the session ends (release locks, abort a transaction, log).
10. The driver keeps no reference to the handler outside ``run``: the handler (the session)
    holds the driver, and a reference back would make every session a reference cycle, left
    for the cyclic garbage collector (with its stream, buffers and transaction) instead of
    being freed when it ends — measurable in CPU per message on the SMTP path.

What can go wrong: nothing escapes ``run`` but a cancel that is not the driver's own and an
exception from ``handler.finish`` (the listener logs it).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from pigeon.net.listener import READ_SIZE, TLS_HANDSHAKE_TIMEOUT, Stream

log = logging.getLogger(__name__)

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)
E_co = TypeVar("E_co", covariant=True)

#: Rule 2: the default bound on what a core may hold when it asks for more input. Each session
#: passes its own (its longest line or literal held in memory, plus one read).
DEFAULT_MAX_BUFFERED = 1024 * 1024


class Ending(enum.Enum):
    """Why the driver ends a session (the handler's ``farewell`` says it on the wire)."""

    SHUTDOWN = "shutdown"  # rule 5: the server is stopping
    TIMEOUT = "timeout"  # rule 4: idle, or a line that took too long


class Core(Protocol[E_co]):
    """What the driver needs of a sans-IO server core."""

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> E_co: ...

    def start_tls(self) -> None: ...

    @property
    def input_buffered(self) -> int: ...


class Handler(Protocol[E_contra]):
    """A protocol's session policy, as the driver calls it."""

    async def start(self) -> None:
        """Before the first read: queue the greeting (a pop3s session runs ``handshake`` first)."""

    async def handle(self, event: E_contra) -> bool:
        """Answer one event; True ends the session once what is pending is written."""

    def farewell(self, ending: Ending) -> bytes:
        """The last words for ``ending`` (may be ``b""``); log here what should be logged."""

    async def finish(self) -> None:
        """Rule 9: always, last."""


class Hangup(Exception):
    """Rule 6: end the session, with ``farewell`` written after what is pending."""

    def __init__(self, farewell: bytes, reason: str = "") -> None:
        super().__init__(reason or farewell.decode("utf-8", "replace").strip())
        self.farewell = farewell


class TlsHandshakeFailed(ConnectionError):
    """Rule 7: the TLS handshake did not finish; the connection is unusable."""


class BufferOverrun(RuntimeError):
    """Rule 2: a core asked for more input while holding more than it may."""


class SessionShutdown(BaseException):
    """Rule 5: the session would wait for input, but the server is stopping.

    A ``BaseException``, as ``asyncio.CancelledError`` is, for the same reason: it passes
    through a handler's ``except Exception`` (IMAP answers an unexpected error ``NO
    [SERVERBUG]`` and goes on) when raised by a read in the middle of a command (IDLE,
    AUTHENTICATE) and reaches the driver, which says the handler's farewell."""


class SessionDriver(Generic[E]):
    """Runs one session: ``stream`` ⇄ ``core`` ⇄ ``handler`` (see the module rules)."""

    def __init__(self, stream: Stream, core: Core[E], *, need: object,
                 output: Callable[[], bytes] | None = None, flush_at: int | None = None,
                 max_buffered: int = DEFAULT_MAX_BUFFERED, service: str = "") -> None:
        """``need``: the core's "feed me more" sentinel (compared by identity).
        ``output``: the core's ``data_to_send``, for cores that serialise their own replies.
        ``flush_at``: rule 3. ``max_buffered``: rule 2. ``service``: for log lines."""
        self.stream = stream
        self.core = core
        self.service = service
        self.max_buffered = max_buffered
        self.flush_at = flush_at
        self.closing = False
        self._need = need
        self._output = output
        self._out = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._waiting = False  # waiting for input: shutdown may cancel the wait (rule 5)
        self._cancelled = False  # the driver itself cancelled the task (rule 5)
        self._read_task: asyncio.Task[bytes] | None = None  # rule 8

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, handler: Handler[E]) -> None:
        """Run the session to its end (rules 1-10); ``handler`` answers its events."""
        task = self._task = asyncio.current_task()
        core, need = self.core, self._need
        try:
            await handler.start()
            flush_at = self.flush_at
            while True:
                event = core.next_event()
                if event is need:
                    await self._refill()
                    continue
                if await handler.handle(event):
                    break
                if flush_at is not None:
                    await self.drain()
            await self.flush()
        except asyncio.CancelledError:
            if not self.closing:
                raise
            self._last_words(handler.farewell(Ending.SHUTDOWN))
            if not self._cancelled:
                raise  # the listener's cancel at the end of its grace period: let it through
            self._cancelled = False
            if task is not None:
                task.uncancel()
        except SessionShutdown:
            self._last_words(handler.farewell(Ending.SHUTDOWN))
        except TimeoutError:  # before OSError: TimeoutError is one (LineTimeout too)
            self._last_words(handler.farewell(Ending.TIMEOUT))
        except Hangup as end:
            self._last_words(end.farewell)
        except OSError as exc:  # ConnectionError, ssl.SSLError, TlsHandshakeFailed
            log.debug("connection lost service=%s client=%s: %s", self.service, self.stream.peer_ip,
                      str(exc) or type(exc).__name__)
        except Exception:
            log.exception("session failed service=%s client=%s", self.service, self.stream.peer_ip)
            self._last_words(b"")  # the answers already due (SMTP: a committed message's 250)
        finally:
            if self._read_task is not None:
                await self._stop_reading()
            await handler.finish()

    def shutdown(self) -> None:
        """Rule 5."""
        self.closing = True
        task = self._task
        if self._waiting and task is not None and not task.done() and not self._cancelled:
            self._cancelled = True
            task.cancel()

    # -- input ---------------------------------------------------------------------------------

    async def next_event(self) -> E:
        """The core's next event, reading as needed (rule 1); for a handler that reads in the
        middle of a command (AUTHENTICATE's response lines)."""
        core, need = self.core, self._need
        while True:
            event = core.next_event()
            if event is not need:
                return event
            await self._refill()

    async def fill(self, timeout: float | None = None, wake: asyncio.Event | None = None) -> bool:
        """Rule 8: write what is pending, then feed the core one read; False when ``timeout``
        passed or ``wake`` was set first (the read stays pending)."""
        if timeout is None and wake is None:
            await self._refill()
            return True
        await self.flush()
        self._check_before_read()
        read = self._read_task
        if read is None:
            read = self._read_task = asyncio.ensure_future(self.stream.read())
        waiter = asyncio.ensure_future(wake.wait()) if wake is not None else None
        self._waiting = True
        try:
            if waiter is None:
                await asyncio.wait((read,), timeout=timeout)
            else:
                await asyncio.wait((read, waiter), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting = False
            if waiter is not None:
                waiter.cancel()
        if not read.done():
            return False
        self._read_task = None
        self.core.receive_data(read.result())  # raises the read's TimeoutError / OSError
        return True

    @property
    def read_pending(self) -> bool:
        """A read started by ``fill`` is still waiting for input (rule 8)."""
        return self._read_task is not None

    def _check_before_read(self) -> None:
        if self.closing:
            raise SessionShutdown
        held = self.core.input_buffered
        if held > self.max_buffered:
            raise BufferOverrun(f"the core holds {held} octets and asks for more (at most {self.max_buffered})")

    async def _refill(self) -> None:
        """Rules 1-2: write what is pending, then one read into the core (or the one ``fill``
        left pending). The SMTP hot path (one call per command line), so written out flat: one
        await for the write when there is output, one for the read."""
        output = self._output
        data = output() if output is not None and not self._out else self._take_output()
        if data:
            await self.stream.write(data)
        core = self.core
        if self.closing or core.input_buffered > self.max_buffered:
            self._check_before_read()  # raises
        read = self._read_task
        self._waiting = True
        try:
            if read is None:
                data = await self.stream.read()
            else:
                self._read_task = None
                data = await read
        finally:
            self._waiting = False
        core.receive_data(data)

    async def _stop_reading(self) -> None:
        read, self._read_task = self._read_task, None
        if read is not None:
            read.cancel()
            try:
                await read
            except BaseException:  # cancelled, or it had failed: nobody reads it any more
                pass

    # -- output --------------------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        """Queue ``data`` to be written (rule 3)."""
        self._out += data

    async def drain(self) -> None:
        """Write what is pending once it reaches ``flush_at`` octets (rule 3)."""
        if self._output is not None:
            self._out += self._output()
        if self.flush_at is not None and len(self._out) >= self.flush_at:
            await self.flush()

    async def flush(self) -> None:
        """Write everything pending, the core's output last."""
        data = self._take_output()
        if data:
            await self.stream.write(data)

    def _take_output(self) -> bytes:
        out = self._out
        output = self._output
        if output is not None:
            data = output()
            if not out:
                return data
            out += data
        elif not out:
            return b""
        data = bytes(out)
        out.clear()
        return data

    def _last_words(self, farewell: bytes) -> None:
        """What is pending, then ``farewell``, without waiting (the close sends it)."""
        data = self._take_output() + farewell
        if data:
            self.stream.write_nowait(data)

    # -- TLS -----------------------------------------------------------------------------------

    async def start_tls(self, context: ssl.SSLContext, timeout: float = TLS_HANDSHAKE_TIMEOUT) -> None:
        """Rule 7: STARTTLS/STLS once the handler queued its positive answer."""
        if self._read_task is not None:
            raise RuntimeError("start_tls with a read pending")
        await self.flush()
        dropped = self.core.input_buffered
        self.core.start_tls()
        await self.handshake(context, timeout, dropped)

    async def handshake(self, context: ssl.SSLContext, timeout: float = TLS_HANDSHAKE_TIMEOUT,
                        dropped: int = 0) -> None:
        """Run the server side of a TLS handshake on the stream (rule 7)."""
        stream = self.stream
        try:
            dropped += await stream.start_tls(context, timeout)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError, ConnectionError are OSErrors
            log.info("TLS handshake failed service=%s client=%s: %s", self.service, stream.peer_ip,
                     str(exc) or type(exc).__name__)
            raise TlsHandshakeFailed(str(exc) or type(exc).__name__) from exc
        if dropped:
            log.warning("discarded %d octets sent in clear before the TLS handshake service=%s client=%s",
                        dropped, self.service, stream.peer_ip)
        log.debug("TLS established service=%s client=%s %s", self.service, stream.peer_ip, stream.tls_info)
