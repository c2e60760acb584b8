"""The control socket: its wire format, the server and the client over a real Unix socket."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from pigeon.control.client import ControlError, ControlUnavailable, call, server_running, socket_path
from pigeon.control.protocol import JSONValue, decode, encode
from pigeon.control.server import ControlServer

# -- the wire format --------------------------------------------------------------------------


def test_encode_is_one_compact_line() -> None:
    line = encode({"cmd": "queue.list", "args": {"a": [1, "x\ny"]}})
    assert line == b'{"cmd":"queue.list","args":{"a":[1,"x\\ny"]}}\n'
    assert line.count(b"\n") == 1  # a newline inside a value is escaped: framing holds
    assert decode(line) == {"cmd": "queue.list", "args": {"a": [1, "x\ny"]}}


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n", b'"text"\n', b"\xff\xfe\n", b"\n"])
def test_decode_refuses_anything_but_an_object(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode(line)


# -- server and client ------------------------------------------------------------------------


def _serve(data_dir: Path, body: Callable[[], Awaitable[None]], max_line: int | None = None) -> None:
    async def run() -> None:
        server = ControlServer(socket_path(data_dir)) if max_line is None else \
            ControlServer(socket_path(data_dir), max_line=max_line)

        async def echo(args: dict[str, JSONValue]) -> JSONValue:
            return args

        async def refuse(args: dict[str, JSONValue]) -> JSONValue:
            raise ValueError("not a queue id: 'x'")

        async def broken(args: dict[str, JSONValue]) -> JSONValue:
            raise RuntimeError("bug")

        server.register("echo", echo)
        server.register("refuse", refuse)
        server.register("broken", broken)
        await server.start()
        try:
            await body()
        finally:
            await server.stop()

    asyncio.run(run())


def _raw(path: Path, data: bytes) -> list[dict[str, object]]:
    """Send raw octets; the answers, one JSON object per line, until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = bytearray()
        while chunk := sock.recv(65536):
            out += chunk
    assert out.endswith(b"\n")
    return [json.loads(line) for line in out.splitlines()]


def test_call_round_trip_and_errors(tmp_path: Path) -> None:
    async def body() -> None:
        assert await asyncio.to_thread(call, tmp_path, "echo", n=1, s="é") == {"n": 1, "s": "é"}
        with pytest.raises(ControlError, match="unknown command 'nope'"):
            await asyncio.to_thread(call, tmp_path, "nope")
        with pytest.raises(ControlError, match="not a queue id"):
            await asyncio.to_thread(call, tmp_path, "refuse")
        with pytest.raises(ControlError, match="internal error: bug"):
            await asyncio.to_thread(call, tmp_path, "broken")
        assert await asyncio.to_thread(call, tmp_path, "echo") == {}  # the server is still up

    _serve(tmp_path, body)


def test_nonsense_requests_get_answers_not_crashes(tmp_path: Path) -> None:
    path = socket_path(tmp_path)

    async def body() -> None:
        answers = await asyncio.to_thread(
            _raw, path,
            b"not json\n"  # not JSON
            b"[1,2]\n"  # JSON, not an object
            b'{"cmd":"echo","args":[1]}\n'  # args not an object
            b'{"args":{}}\n'  # no command
            b"\xff\n"  # not UTF-8
            b'{"cmd":"echo","args":{"k":"v"}}\n',  # and a good one on the same connection
        )
        assert [a["ok"] for a in answers] == [False, False, False, False, False, True]
        assert str(answers[0]["error"]).startswith("bad request")
        assert str(answers[1]["error"]).startswith("bad request")
        assert answers[2]["error"] == "unknown command 'echo'"
        assert answers[3]["error"] == "unknown command None"
        assert answers[5]["result"] == {"k": "v"}

    _serve(tmp_path, body)


def test_an_over_long_request_is_refused(tmp_path: Path) -> None:
    path = socket_path(tmp_path)

    async def body() -> None:
        long = encode({"cmd": "echo", "args": {"pad": "x" * 5000}})
        answers = await asyncio.to_thread(_raw, path, long + encode({"cmd": "echo", "args": {}}))
        # refused, and the connection closed: the request after it is not served
        assert answers == [{"ok": False, "error": "request too long"}]
        with pytest.raises(ControlError, match="request too long"):
            await asyncio.to_thread(call, tmp_path, "echo", pad="y" * 5000)
        assert await asyncio.to_thread(call, tmp_path, "echo", pad="short") == {"pad": "short"}

    _serve(tmp_path, body, max_line=4096)


def test_no_server(tmp_path: Path) -> None:
    with pytest.raises(ControlUnavailable):
        call(tmp_path, "echo")
    assert not server_running(tmp_path)


def test_server_running_follows_the_data_directory_lock(tmp_path: Path) -> None:
    lock = tmp_path / "pigeon.lock"
    lock.touch()
    assert not server_running(tmp_path)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert server_running(tmp_path)
    finally:
        os.close(fd)
    assert not server_running(tmp_path)
