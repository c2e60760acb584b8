"""net.listener.Stream: the lazy inactivity watchdog (one timer per stream, not one per read)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pigeon.net.listener import LineTimeout, Stream
from pigeon.net.tls import TlsManager, ensure_self_signed


async def _pair(timeout: float, body: Callable[[Stream, asyncio.StreamWriter], Awaitable[None]],
                line_timeout: float | None = None) -> None:
    """Run ``body(server_stream, client_writer)`` over a real loopback connection."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    client: asyncio.Future[asyncio.StreamWriter] = loop.create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = Stream(reader, writer, timeout, line_timeout)
        try:
            await body(stream, await client)
            done.set_result(None)
        except BaseException as exc:  # handed to the test
            done.set_exception(exc)
        finally:
            await stream.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client_r, client_w = await asyncio.open_connection("127.0.0.1", port)
    client.set_result(client_w)
    try:
        await asyncio.wait_for(done, 10)
    finally:
        client_w.close()
        await client_w.wait_closed()
        server.close()
        await server.wait_closed()
    del client_r


def test_an_idle_read_times_out() -> None:
    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await stream.read()
        assert 0.15 <= loop.time() - t0 < 2

    asyncio.run(_pair(0.2, body))


def test_each_read_gets_the_whole_timeout() -> None:
    """Reads that each wait less than the timeout never time out, however long they add up to."""

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        for i in range(6):  # 6 × 0.12 s waits, 0.72 s in all, with a 0.3 s timeout
            async def feed(n: int = i) -> None:
                await asyncio.sleep(0.12)
                client.write(b"line %d\r\n" % n)
            task = asyncio.create_task(feed())
            assert await stream.read() == b"line %d\r\n" % i
            await task
        with pytest.raises(TimeoutError):  # and then silence still times out
            await stream.read()

    asyncio.run(_pair(0.3, body))


def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        reader = asyncio.create_task(stream.read())
        await asyncio.sleep(0.05)
        reader.cancel()  # e.g. the listener shutting the session down
        with pytest.raises(asyncio.CancelledError):
            await reader
        client.write(b"after\r\n")
        assert await stream.read() == b"after\r\n"  # the stream still works

    asyncio.run(_pair(5, body))


def test_a_failed_read_leaves_no_armed_watchdog() -> None:
    """A read that ends in an error (not a cancel) must not leave the task marked as waiting:
    the timer would otherwise cancel it later, in code that is not reading."""

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        async def boom() -> bytes:
            raise ConnectionResetError("peer reset")

        with pytest.raises(ConnectionResetError):
            await stream._guarded(boom(), 0)
        await asyncio.sleep(0.4)  # past the 0.2 s deadline: nothing may cancel us here

    asyncio.run(_pair(0.2, body))


def test_a_read_in_another_task_keeps_its_own_deadline_while_writes_go_on() -> None:
    """IMAP IDLE: a read waits in a task of its own while the session writes updates. The
    writes must neither untrack the read nor push its deadline back: a client silent for the
    whole timeout is timed out even though the server kept talking."""

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reader = asyncio.create_task(stream.read())
        for i in range(8):  # writes every 0.1 s, for longer than the 0.3 s timeout
            await asyncio.sleep(0.1)
            await stream.write(b"* %d EXISTS\r\n" % i)
            if reader.done():
                break
        with pytest.raises(TimeoutError):
            await reader
        assert 0.25 <= loop.time() - t0 < 0.6

    asyncio.run(_pair(0.3, body))


def test_a_blocked_write_times_out_while_a_read_waits() -> None:
    """The other way round: a write that cannot drain (the peer reads nothing) times out on
    its own, and the pending read is cancelled by nobody but its own deadline."""

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        reader = asyncio.create_task(stream.read())
        stream.writer.transport.set_write_buffer_limits(high=1)  # every write waits for drain
        with pytest.raises((TimeoutError, ConnectionError)):
            for _ in range(10_000):  # the client never reads: the socket buffers fill up
                await stream.write(b"x" * 65536)
        with pytest.raises(TimeoutError):
            await reader

    asyncio.run(_pair(0.3, body))


def test_a_trickle_that_never_completes_a_line_is_cut_off() -> None:
    """Rule 4: one octet every 0.1 s keeps resetting the 0.3 s inactivity timeout, but the
    line it never finishes is cut off by the 0.6 s line deadline."""

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()

        async def trickle() -> None:
            for _ in range(40):
                client.write(b"x")
                await asyncio.sleep(0.1)

        feeder = asyncio.create_task(trickle())
        t0 = loop.time()
        try:
            with pytest.raises(LineTimeout):
                while True:
                    await stream.read()
        finally:
            feeder.cancel()
        assert 0.55 <= loop.time() - t0 < 1.5

    asyncio.run(_pair(0.3, body, line_timeout=0.6))


def test_a_trickle_of_whole_lines_is_not_cut_off() -> None:
    """Lines that each arrive within the line deadline never trip it, however many there are;
    a line that ends in the middle of a read starts a new deadline of its own."""

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(10):  # "NO" ... "OP\r\nNO" ...: 1 s in all, 0.2 s per line, deadline 0.35 s
            client.write(b"OP\r\nNO" if i else b"NO")
            await stream.read()
            await asyncio.sleep(0.1)
        assert loop.time() - t0 >= 0.9
        with pytest.raises(TimeoutError):  # silence still ends it, through the idle timeout
            await stream.read()

    asyncio.run(_pair(0.3, body, line_timeout=0.35))


def test_the_line_deadline_is_not_pushed_back_by_a_later_idle_deadline() -> None:
    """An idle deadline armed before a read (a pending write's, say) must not delay the
    earlier line deadline of that read."""

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        client.write(b"HEL")
        assert await stream.read() == b"HEL"
        t0 = loop.time()
        with pytest.raises(LineTimeout):
            await stream.read()
        assert loop.time() - t0 < 1.0  # the line's 0.4 s, not the idle 5 s

    asyncio.run(_pair(5, body, line_timeout=0.4))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_start_tls_drops_clear_text_left_in_asyncios_buffer(tmp_path: Path) -> None:
    """Octets that arrived before the handshake and that nobody read yet (they sit in asyncio's
    reader buffer, not in the protocol core) are dropped, counted, and never read as if they
    came over TLS (CVE-2011-0411 class; net.driver rule 7 drops the core's part)."""
    server_ctx = TlsManager(ensure_self_signed("localhost", tmp_path)).context()
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE

    async def body(stream: Stream, client: asyncio.StreamWriter) -> None:
        client.write(b"USER injected\r\n")
        for _ in range(100):  # asyncio reads the socket into the reader's buffer by itself
            if stream.reader._buffer:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        upgrade = asyncio.create_task(stream.start_tls(server_ctx))
        await client.start_tls(client_ctx)
        assert await upgrade == len(b"USER injected\r\n")
        assert stream.tls_active
        client.write(b"inside\r\n")
        assert await stream.read() == b"inside\r\n"

    asyncio.run(_pair(5, body))
