"""net.channel.Channel over real loopback connections: reads, back-pressure, end of input, resets."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from pigeon.net.channel import Channel

Body = Callable[[Channel, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _pair(body: Body, limit: int = 1024) -> None:
    """Run ``body(server_channel, client_reader, client_writer)`` over one loopback connection."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[Channel] = loop.create_future()
    idle: asyncio.Event = asyncio.Event()

    async def session() -> None:
        await idle.wait()  # the test drives the channel itself

    def on_connect(channel: Channel) -> asyncio.Task[None]:
        made.set_result(channel)
        return loop.create_task(session())

    server = await loop.create_server(lambda: Channel(on_connect, limit), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    channel = await asyncio.wait_for(made, 5)
    try:
        await asyncio.wait_for(body(channel, reader, writer), 10)
    finally:
        idle.set()
        writer.close()
        channel.close()
        server.close()
        await server.wait_closed()


def test_reads_return_what_arrived_in_order_and_never_more_than_asked() -> None:
    async def body(channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"EHLO a\r\n")
        assert await channel.read(100) == b"EHLO a\r\n"
        writer.write(b"0123456789")
        await writer.drain()
        await asyncio.sleep(0.05)
        assert await channel.read(4) == b"0123"
        assert await channel.read(100) == b"456789"

    asyncio.run(_pair(body))


def test_reading_pauses_past_the_limit_and_resumes_once_read() -> None:
    """Rule 2: a client that sends faster than the session reads is held in the kernel."""
    sent = bytes(range(256)) * 64  # 16 KiB against a 1 KiB limit

    async def body(channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(sent)
        await asyncio.sleep(0.1)
        assert not channel.transport.is_reading()  # paused: the rest waits in the socket
        got = bytearray()
        while len(got) < len(sent):
            got += await channel.read(700)
        assert bytes(got) == sent
        assert channel.transport.is_reading()

    asyncio.run(_pair(body))


def test_end_of_input_reads_empty_and_the_replies_still_go_out() -> None:
    """Rule 4: after the client's half-close the server still writes what is due."""
    async def body(channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"QUIT\r\n")
        writer.write_eof()
        assert await channel.read(100) == b"QUIT\r\n"
        assert await channel.read(100) == b""
        assert await channel.read(100) == b""
        channel.write(b"221 bye\r\n")
        await channel.drain()
        assert await reader.readline() == b"221 bye\r\n"

    asyncio.run(_pair(body))


def test_a_reset_raises_from_read_and_drain() -> None:
    async def body(channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST
        with pytest.raises(ConnectionError):
            await channel.read(100)
        with pytest.raises(ConnectionError):
            await channel.drain()

    asyncio.run(_pair(body))


def test_one_reader_at_a_time() -> None:
    async def body(channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = asyncio.ensure_future(channel.read(10))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await channel.read(10)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        writer.write(b"x")  # a cancelled read leaves no waiter behind: the next read gets it
        assert await channel.read(10) == b"x"

    asyncio.run(_pair(body))


def test_channels_sharing_one_receive_buffer_each_keep_their_own_input() -> None:
    """Rule 7: the listener lends one receive buffer to every channel; what each connection
    sent stays that connection's, however the reads interleave."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        shared = memoryview(bytearray(64))  # smaller than what each client sends: many reads
        channels: list[Channel] = []
        idle = asyncio.Event()

        async def session() -> None:
            await idle.wait()

        def on_connect(channel: Channel) -> asyncio.Task[None]:
            channels.append(channel)
            return loop.create_task(session())

        server = await loop.create_server(lambda: Channel(on_connect, 1 << 20, shared), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        sent = [bytes([65 + i]) * 5000 for i in range(3)]
        for (_, writer), data in zip(clients, sent):
            writer.write(data[:2500])
        for (_, writer), data in zip(clients, sent):
            writer.write(data[2500:])
            await writer.drain()
        await asyncio.sleep(0.2)
        assert len(channels) == 3
        by_peer = {ch.get_extra_info("peername"): ch for ch in channels}
        try:
            for (_, writer), data in zip(clients, sent):
                channel = by_peer[writer.get_extra_info("sockname")]
                got = bytearray()
                while len(got) < len(data):
                    got += await asyncio.wait_for(channel.read(1000), 5)
                assert bytes(got) == data
        finally:
            idle.set()
            for _, writer in clients:
                writer.close()
            for channel in channels:
                channel.close()
                await channel.wait_closed()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
