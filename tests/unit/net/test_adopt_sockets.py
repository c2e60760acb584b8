"""``adopt_listening_sockets``: the listening sockets a worker process inherits by descriptor."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pigeon.net.listener import adopt_listening_sockets


def test_a_listening_socket_is_adopted() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        fd = os.dup(srv.fileno())
        [sock] = adopt_listening_sockets([fd])
        try:
            assert sock.fileno() == fd
            assert sock.getsockname() == srv.getsockname()
        finally:
            sock.close()


def test_a_socket_that_does_not_listen_is_refused_and_left_open() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(OSError, match="not a listening stream socket"):
            adopt_listening_sockets([s.fileno()])
        os.fstat(s.fileno())  # still open: not ours to close


def test_a_file_is_refused(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        with pytest.raises(OSError):
            adopt_listening_sockets([fd])
        os.fstat(fd)
    finally:
        os.close(fd)


def test_a_closed_descriptor_is_refused() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError):
        adopt_listening_sockets([fd])
