"""Talk to a running server's control socket; ``ControlUnavailable`` when none runs."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from pigeon.control.protocol import MAX_LINE, SOCKET_NAME, JSONValue, decode, encode


class ControlUnavailable(Exception):
    """No server is listening on the data directory's control socket."""


class ControlError(Exception):
    """The server answered with an error."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def call(data_dir: Path, cmd: str, timeout: float = 30.0, **args: JSONValue) -> JSONValue:
    path = socket_path(data_dir)
    if not path.exists():
        raise ControlUnavailable(str(path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise ControlUnavailable(str(path)) from exc
        sock.sendall(encode({"cmd": cmd, "args": dict(args)}))
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_LINE:
                raise ControlError("answer too long")
    finally:
        sock.close()
    if not buf:
        raise ControlError("server closed the control connection")
    resp = decode(bytes(buf))
    if not resp.get("ok"):
        raise ControlError(str(resp.get("error")))
    return resp.get("result")


def server_running(data_dir: Path) -> bool:
    """Whether a server holds the data directory's lock (``pigeon.lock``, taken by ``serve``)."""
    lock = data_dir / "pigeon.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
