"""Line-per-message Unix sockets (pigeon.net.local): the control socket's transport."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pigeon.net.local import AnswerTooLong, LineServer, NotListening, request

TOO_LONG = b"too long\n"


async def _with_server(path: Path, handler: Callable[[bytes], Awaitable[bytes]], max_line: int,
                       body: Callable[[], Awaitable[None]]) -> None:
    server = LineServer(path, handler, max_line, TOO_LONG)
    await server.start()
    try:
        await body()
    finally:
        await server.stop()


def _raw_exchange(path: Path, data: bytes) -> bytes:
    """Send ``data``, half-close, and read everything the server says until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := sock.recv(65536):
            out += chunk
    return bytes(out)


def test_answers_each_line_in_order_and_a_last_line_without_lf(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    seen: list[bytes] = []

    async def upper(line: bytes) -> bytes:
        seen.append(line)
        return line.strip().upper() + b"\n"

    async def body() -> None:
        got = await asyncio.to_thread(_raw_exchange, path, b"one\ntwo\nthree")
        assert got == b"ONE\nTWO\nTHREE\n"  # rule 3

    asyncio.run(_with_server(path, upper, 1024, body))
    assert seen == [b"one\n", b"two\n", b"three"]
    assert not path.exists()  # stop removes the socket file


def test_an_over_long_request_is_refused_and_the_connection_closed(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    seen: list[bytes] = []

    async def handler(line: bytes) -> bytes:
        seen.append(line)
        return b"ok\n"

    async def body() -> None:
        got = await asyncio.to_thread(_raw_exchange, path, b"x" * 5000 + b"\nafter\n")
        assert got == TOO_LONG  # rule 2: nothing after the refusal is served
        # the server goes on with other clients
        assert await asyncio.to_thread(_raw_exchange, path, b"short\n") == b"ok\n"

    asyncio.run(_with_server(path, handler, 1024, body))
    assert seen == [b"short\n"]  # the handler never saw the long line


def test_socket_is_private_and_a_stale_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_bytes(b"left by a killed server")

    async def echo(line: bytes) -> bytes:
        return line

    async def body() -> None:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600  # rule 1
        assert await asyncio.to_thread(request, path, b"hi\n", 5.0, 1024) == b"hi\n"

    asyncio.run(_with_server(path, echo, 1024, body))


def test_request_without_a_server(tmp_path: Path) -> None:
    with pytest.raises(NotListening):
        request(tmp_path / "absent.sock", b"x\n", 1.0, 1024)
    stale = tmp_path / "stale.sock"  # a socket file nobody listens on any more
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    with pytest.raises(NotListening):
        request(stale, b"x\n", 1.0, 1024)


def test_request_refuses_an_over_long_answer(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    async def big(line: bytes) -> bytes:
        return b"y" * 10_000 + b"\n"

    async def body() -> None:
        with pytest.raises(AnswerTooLong):
            await asyncio.to_thread(request, path, b"x\n", 5.0, 1000)

    asyncio.run(_with_server(path, big, 1024, body))
