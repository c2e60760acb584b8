"""Talk to a running server's control socket; ``ControlUnavailable`` when none runs.

The socket itself is ``net.local``'s (one line each way); this module speaks the control
protocol over it (``control.protocol``) and knows where the socket lives.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pigeon.control.protocol import MAX_LINE, SOCKET_NAME, JSONValue, decode, encode
from pigeon.net.local import AnswerTooLong, NotListening, request


class ControlUnavailable(Exception):
    """No server is listening on the data directory's control socket."""


class ControlError(Exception):
    """The server answered with an error."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def call(data_dir: Path, cmd: str, timeout: float = 30.0, **args: JSONValue) -> JSONValue:
    path = socket_path(data_dir)
    try:
        answer = request(path, encode({"cmd": cmd, "args": dict(args)}), timeout, MAX_LINE)
    except NotListening as exc:
        raise ControlUnavailable(str(path)) from exc
    except AnswerTooLong as exc:
        raise ControlError("answer too long") from exc
    if not answer:
        raise ControlError("server closed the control connection")
    resp = decode(answer)
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
