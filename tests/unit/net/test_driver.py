"""net.driver.SessionDriver with a tiny line protocol: the driver's rules, apart from any mail protocol.

The protocol: one command per line; ``ECHO x`` answers ``x``; ``SLOW`` waits until the test
releases it; ``BIG n`` answers n octets in pieces of 64 KiB; ``BOOM`` raises; ``HANGUP`` raises
``Hangup``; ``WAIT`` waits for input, a wake or 0.3 s (as IMAP IDLE does); ``STARTTLS`` upgrades;
``QUIT`` says ``bye`` and ends. Most tests run over a real loopback ``Listener``; those that count
reads and writes use a fake stream.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
import shutil
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pigeon.net.driver import Ending, Hangup, SessionDriver
from pigeon.net.listener import ConnectionLimits, Listener, Stream
from pigeon.net.tls import TlsManager, ensure_self_signed

NEED = object()
CLOSED = b"<closed>"


class LineCore:
    """A sans-IO core: lines in (CRLF or LF), lines out; ``max_line`` 0 = no limit (a broken core)."""

    def __init__(self, max_line: int = 1000) -> None:
        self.buf = bytearray()
        self.eof = False
        self.max_line = max_line
        self.dropped = 0

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.eof = True
        self.buf += data

    def next_event(self) -> object:
        lf = self.buf.find(b"\n")
        if lf < 0:
            if self.max_line and len(self.buf) >= self.max_line:
                self.buf.clear()
                return b"<too long>"
            return CLOSED if self.eof else NEED
        line = bytes(self.buf[:lf]).rstrip(b"\r")
        del self.buf[: lf + 1]
        return line

    def start_tls(self) -> None:
        self.dropped += len(self.buf)
        self.buf.clear()

    @property
    def input_buffered(self) -> int:
        return len(self.buf)


class LineSession:
    """The handler (and the listener's Session) of the line protocol."""

    def __init__(self, stream: Stream, test: Harness) -> None:
        self.stream = stream
        self.test = test
        self.core = LineCore(test.max_line)
        self.driver = SessionDriver(stream, self.core, need=NEED, flush_at=test.flush_at,
                                    max_buffered=test.max_buffered, service="line")
        self.wake = asyncio.Event()
        self.finished = False
        test.sessions.append(self)

    async def run(self) -> None:
        await self.driver.run(self)

    def shutdown(self) -> None:
        self.driver.shutdown()

    async def start(self) -> None:
        self.driver.emit(b"hello\r\n")

    async def handle(self, event: object) -> bool:
        assert isinstance(event, bytes)
        self.test.events.append(event)
        d = self.driver
        verb, _, arg = event.partition(b" ")
        if event == CLOSED:
            return True
        if verb == b"ECHO":
            d.emit(arg + b"\r\n")
        elif verb == b"SLOW":
            self.test.slow_started.set()
            await self.test.release.wait()
            d.emit(b"slow done\r\n")
        elif verb == b"BIG":
            left = int(arg)
            while left:
                n = min(left, 65536)
                d.emit(b"x" * n)
                left -= n
                await d.drain()
            d.emit(b"\r\n")
        elif verb == b"BOOM":
            raise ValueError("a bug in the handler")
        elif verb == b"HANGUP":
            raise Hangup(b"* hanging up\r\n")
        elif verb == b"WAIT":
            d.emit(b"+ waiting\r\n")
            got = await d.fill(timeout=0.3, wake=self.wake)
            d.emit(b"input\r\n" if got else (b"woken\r\n" if self.wake.is_set() else b"timeout\r\n"))
            self.wake.clear()
        elif verb == b"STARTTLS":
            d.emit(b"go ahead\r\n")
            assert self.test.tls is not None
            await d.start_tls(self.test.tls.context())
        elif verb == b"QUIT":
            d.emit(b"bye\r\n")
            return True
        else:
            d.emit(b"what? " + event + b"\r\n")
        return False

    def farewell(self, ending: Ending) -> bytes:
        return b"* shutting down\r\n" if ending is Ending.SHUTDOWN else b"* timeout\r\n"

    async def finish(self) -> None:
        self.finished = True


class Harness:
    def __init__(self, *, timeout: float = 5.0, line_timeout: float | None = None, flush_at: int | None = None,
                 max_buffered: int = 1 << 20, max_line: int = 1000, tls: TlsManager | None = None) -> None:
        self.timeout = timeout
        self.line_timeout = line_timeout
        self.flush_at = flush_at
        self.max_buffered = max_buffered
        self.max_line = max_line
        self.tls = tls
        self.sessions: list[LineSession] = []
        self.events: list[bytes] = []
        self.slow_started = asyncio.Event()
        self.release = asyncio.Event()
        self.listener: Listener | None = None

    async def start(self) -> int:
        self.listener = Listener("line", [("127.0.0.1", 0)], lambda s: LineSession(s, self),
                                 lambda: ConnectionLimits(10, 10, self.timeout, self.line_timeout), b"busy\r\n")
        await self.listener.start()
        return self.listener.bound[0][1]

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop(grace=2.0)


def run(body: Callable[[Harness, int], Awaitable[None]], **kw: object) -> Harness:
    async def main() -> Harness:
        h = Harness(**kw)  # type: ignore[arg-type]
        port = await h.start()
        try:
            await asyncio.wait_for(body(h, port), 10)
        finally:
            await h.stop()
        return h

    return asyncio.run(main())


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readline() == b"hello\r\n"
    return reader, writer


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


# -- the loop, output, end of session -------------------------------------------------------------

def test_pipelined_commands_are_answered_in_order_and_quit_ends_the_session() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"ECHO one\r\nECHO two\r\nNOPE\r\nQUIT\r\nECHO never\r\n")
        assert await read_all(reader) == b"one\r\ntwo\r\nwhat? NOPE\r\nbye\r\n"
        writer.close()

    h = run(body)
    assert h.events == [b"ECHO one", b"ECHO two", b"NOPE", b"QUIT"]
    assert h.sessions[0].finished


def test_the_peer_closing_ends_the_session_and_finish_runs() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"ECHO last\r\n")
        writer.write_eof()
        assert await read_all(reader) == b"last\r\n"  # answered before the end
        writer.close()

    h = run(body)
    assert h.events[-1] == CLOSED and h.sessions[0].finished


def test_a_handler_exception_is_logged_and_closes_the_session(caplog: pytest.LogCaptureFixture) -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"ECHO before\r\nBOOM\r\n")
        assert await read_all(reader) == b"before\r\n"  # what was due, then closed: not hung
        writer.close()

    with caplog.at_level(logging.ERROR, logger="pigeon.net.driver"):
        h = run(body)
    assert h.sessions[0].finished
    [record] = [r for r in caplog.records if "session failed" in r.getMessage()]
    assert record.exc_info is not None and "a bug in the handler" in str(record.exc_info[1])


def test_hangup_writes_what_is_pending_then_its_farewell() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"ECHO first\r\nHANGUP\r\nECHO never\r\n")
        assert await read_all(reader) == b"first\r\n* hanging up\r\n"
        writer.close()

    run(body)


# -- back-pressure -------------------------------------------------------------------------------

class FakeStream:
    """Stands in for ``Stream``: reads from a list, records writes and whether a read was waiting."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.writes: list[bytes] = []
        self.reads = 0
        self.reading = False
        self.peer_ip = "192.0.2.1"
        self.timeout = 5.0
        self.tls_active = False

    async def read(self) -> bytes:
        self.reading = True
        try:
            await asyncio.sleep(0)
            self.reads += 1
            return self.chunks.pop(0) if self.chunks else b""
        finally:
            self.reading = False

    async def write(self, data: bytes) -> None:
        if data:
            self.writes.append(data)

    def write_nowait(self, data: bytes) -> None:
        if data:
            self.writes.append(data)


def run_fake(chunks: list[bytes], **kw: object) -> tuple[FakeStream, Harness, LineSession]:
    async def main() -> tuple[FakeStream, Harness, LineSession]:
        stream = FakeStream(chunks)
        h = Harness(**kw)  # type: ignore[arg-type]
        session = LineSession(stream, h)  # type: ignore[arg-type]
        h.release.set()
        await asyncio.wait_for(session.run(), 5)
        return stream, h, session

    return asyncio.run(main())


def test_replies_to_a_pipelined_batch_go_out_in_one_write_without_flush_at() -> None:
    stream, _, _ = run_fake([b"ECHO a\r\nECHO b\r\nECH", b"O c\r\nQUIT\r\n"])
    # the greeting before the first read; a and b before the second; c and bye at the end
    assert stream.writes == [b"hello\r\n", b"a\r\nb\r\n", b"c\r\nbye\r\n"]


def test_big_output_is_written_in_flush_at_pieces_while_the_handler_runs() -> None:
    stream, _, _ = run_fake([b"BIG 1000000\r\nQUIT\r\n"], flush_at=256 * 1024)
    sizes = [len(w) for w in stream.writes[1:]]
    assert sum(sizes) == 1000000 + len(b"\r\nbye\r\n")
    assert len(sizes) >= 4 and max(sizes) < 256 * 1024 + 65536  # never more than flush_at + a piece


def test_nothing_is_read_while_a_handler_runs_nor_while_the_core_has_events() -> None:
    async def main() -> None:
        stream = FakeStream([b"SLOW\r\nECHO a\r\n", b"QUIT\r\n"])
        h = Harness()
        session = LineSession(stream, h)  # type: ignore[arg-type]
        task = asyncio.create_task(session.run())
        await h.slow_started.wait()
        for _ in range(20):
            await asyncio.sleep(0)
            assert not stream.reading and stream.reads == 1  # the second chunk waits
        h.release.set()
        await asyncio.wait_for(task, 5)
        assert stream.reads == 2
        assert b"".join(stream.writes) == b"hello\r\nslow done\r\na\r\nbye\r\n"

    asyncio.run(main())


def test_a_core_that_holds_too_much_ends_the_session_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """A broken core (no line limit) asking for more while it holds over max_buffered: a logged
    close, not a buffer that grows with whatever the client sends."""
    chunks = [b"x" * 4096] * 100
    with caplog.at_level(logging.ERROR, logger="pigeon.net.driver"):
        stream, _, session = run_fake(chunks, max_line=0, max_buffered=10_000)
    assert stream.reads == 3  # 12288 octets held: no fourth read
    assert session.finished
    assert any("holds 12288 octets" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_a_finished_session_is_freed_at_once_not_by_the_cyclic_gc() -> None:
    """Rule 10: the session holds the driver, the driver holds no reference back."""
    gc.disable()
    try:
        stream, h, session = run_fake([b"ECHO a\r\nQUIT\r\n"])
        h.sessions.clear()
        gone = weakref.ref(session)
        del session
        assert gone() is None
    finally:
        gc.enable()


# -- timeouts ------------------------------------------------------------------------------------

def test_inactivity_ends_the_session_with_the_timeout_farewell() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        t0 = asyncio.get_running_loop().time()
        assert await read_all(reader) == b"* timeout\r\n"
        assert 0.15 < asyncio.get_running_loop().time() - t0 < 2
        writer.close()

    h = run(body, timeout=0.2)
    assert h.sessions[0].finished


def test_a_trickled_line_is_cut_off_by_the_line_deadline() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(6):  # one octet every 0.1 s: each read well within the idle 0.5 s
            writer.write(b"x")
            await asyncio.sleep(0.1)
        # then silence (nothing unread when the server closes, so no reset): the idle timeout
        # would end it at 1.0 s, the line deadline does at 0.6 s
        assert await read_all(reader) == b"* timeout\r\n"
        assert loop.time() - t0 < 0.9
        writer.close()

    run(body, timeout=0.5, line_timeout=0.6)


# -- shutdown ------------------------------------------------------------------------------------

def test_shutdown_wakes_a_session_waiting_for_input_at_once() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"ECHO a\r\n")
        assert await reader.readline() == b"a\r\n"
        assert h.listener is not None
        t0 = asyncio.get_running_loop().time()
        await h.listener.stop(grace=5.0)
        assert asyncio.get_running_loop().time() - t0 < 1.0
        assert await read_all(reader) == b"* shutting down\r\n"
        writer.close()

    h = run(body)
    assert h.sessions[0].finished


def test_shutdown_lets_a_busy_session_answer_what_it_received_first() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"SLOW\r\nECHO pipelined\r\n")
        await h.slow_started.wait()
        assert h.listener is not None
        stopping = asyncio.create_task(h.listener.stop(grace=5.0))
        await asyncio.sleep(0.1)
        h.release.set()
        await stopping
        assert await read_all(reader) == b"slow done\r\npipelined\r\n* shutting down\r\n"
        writer.close()

    run(body)


def test_shutdown_ends_a_wait_for_input_or_wake() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"WAIT\r\n")
        assert await reader.readline() == b"+ waiting\r\n"
        assert h.listener is not None
        await h.listener.stop(grace=5.0)
        assert await read_all(reader) == b"* shutting down\r\n"
        writer.close()

    h = run(body)
    assert h.sessions[0].finished


# -- waiting for input or an event (IMAP IDLE) -----------------------------------------------------

def test_fill_returns_on_input_on_wake_and_on_timeout_without_losing_input() -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"WAIT\r\n")
        assert await reader.readline() == b"+ waiting\r\n"
        assert await reader.readline() == b"timeout\r\n"  # 0.3 s of nothing
        writer.write(b"WAIT\r\n")
        assert await reader.readline() == b"+ waiting\r\n"
        h.sessions[0].wake.set()
        assert await reader.readline() == b"woken\r\n"
        # the read the wake left pending gets what comes next: nothing is lost
        writer.write(b"ECHO after\r\n")
        assert await reader.readline() == b"after\r\n"
        writer.write(b"WAIT\r\n")
        assert await reader.readline() == b"+ waiting\r\n"
        writer.write(b"ECHO during\r\n")
        assert await reader.readline() == b"input\r\n"
        assert await reader.readline() == b"during\r\n"
        writer.write(b"QUIT\r\n")
        assert await read_all(reader) == b"bye\r\n"
        writer.close()

    run(body)


# -- STARTTLS ------------------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@needs_openssl
def test_starttls_drops_what_was_pipelined_in_clear(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"STARTTLS\r\nECHO injected\r\nQUIT\r\n")  # CVE-2011-0411 class
        assert await reader.readline() == b"go ahead\r\n"
        await writer.start_tls(client_tls())
        writer.write(b"ECHO inside\r\nQUIT\r\n")
        assert await read_all(reader) == b"inside\r\nbye\r\n"
        writer.close()

    with caplog.at_level(logging.WARNING, logger="pigeon.net.driver"):
        h = run(body, tls=TlsManager(ensure_self_signed("localhost", tmp_path)))
    assert h.events == [b"STARTTLS", b"ECHO inside", b"QUIT"]
    assert h.sessions[0].core.dropped == len(b"ECHO injected\r\nQUIT\r\n")
    assert any("discarded 21 octets" in r.getMessage() for r in caplog.records)


@needs_openssl
def test_a_failed_handshake_ends_the_session_quietly(tmp_path: Path) -> None:
    async def body(h: Harness, port: int) -> None:
        reader, writer = await connect(port)
        writer.write(b"STARTTLS\r\n")
        assert await reader.readline() == b"go ahead\r\n"
        writer.write(b"this is not a ClientHello\r\n" * 10)
        try:  # no farewell over a broken channel: an end of file, or a reset
            assert await read_all(reader) == b""
        except ConnectionResetError:
            pass
        writer.close()

    h = run(body, tls=TlsManager(ensure_self_signed("localhost", tmp_path)))
    assert h.sessions[0].finished
