"""The real ``pigeon worker`` process's side of the handshake (app.worker rules 2, 4, 6): it says
hello first, refuses a server of another ipc version before it serves anything, says ready
once it listens on the socket handed to it, and stops when its standard input closes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pigeon.app import ipc
from pigeon.app.worker import EXIT_REFUSED

SRC = Path(__file__).resolve().parents[3] / "src"


def start(tmp_path: Path, fds: tuple[int, ...], service: str = "smtp") -> subprocess.Popen[bytes]:
    config = tmp_path / "pigeon.toml"
    (tmp_path / "data").mkdir(mode=0o700, exist_ok=True)  # the server made it before any worker
    config.write_text(f'hostname = "mx.example.test"\ndata_dir = "{tmp_path / "data"}"\n'
                      'domains = ["example.test"]\n[listen]\nsmtp = ["127.0.0.1:2525"]\n')
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PIGEON_CONFIG", None)
    arg = f"{service}={','.join(map(str, fds))}" if fds else service
    return subprocess.Popen([sys.executable, "-m", "pigeon", "--config", str(config), "worker", "--pool", "smtp",
                             "--index", "1", "--service", arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=fds, env=env)


def read(proc: subprocess.Popen[bytes]) -> ipc.WorkerMessage:
    assert proc.stdout is not None
    [msg] = ipc.worker_reader().feed(proc.stdout.readline())
    assert not isinstance(msg, ipc.IpcError), msg
    return msg


def say(proc: subprocess.Popen[bytes], line: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line)
    proc.stdin.flush()


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    assert proc.stdin is not None and proc.stderr is not None
    if not proc.stdin.closed:
        proc.stdin.close()  # the server is gone (if the worker still waits for anything)
    rc = proc.wait(30)
    err = proc.stderr.read().decode()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return rc, err


@pytest.fixture
def listening() -> socket.socket:
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield s  # type: ignore[misc]


def test_it_says_ready_on_the_socket_it_was_given_and_stops_when_the_server_is_gone(
        tmp_path: Path, listening: socket.socket) -> None:
    proc = start(tmp_path, (listening.fileno(),))
    hello = read(proc)
    assert hello == ipc.Hello(ipc.IPC_VERSION, proc.pid)
    say(proc, ipc.encode(ipc.hello()))
    assert read(proc) == ipc.Ready(("smtp",))
    with socket.create_connection(listening.getsockname(), timeout=10) as c:  # one accept queue: it answers
        assert c.recv(100).startswith(b"220 mx.example.test")
    rc, err = finish(proc)  # closes its standard input: the server is gone
    assert rc == 0, err
    assert "smtp worker 1: the server is gone; stopping" in err


@pytest.mark.parametrize(("line", "why"), [
    (json.dumps({"op": "hello", "version": ipc.IPC_VERSION + 98, "pid": 1}).encode() + b"\n",
     f"speaks ipc version {ipc.IPC_VERSION + 98}, this side {ipc.IPC_VERSION}"),
    (b"launch the missiles\n", "not JSON"),
    (json.dumps({"op": "schedule", "id": "0123456789ABCDEF"}).encode() + b"\n", "unknown op 'schedule' from the server"),
])
def test_a_server_it_cannot_trust_is_refused_before_anything_is_served(
        tmp_path: Path, listening: socket.socket, line: bytes, why: str) -> None:
    proc = start(tmp_path, (listening.fileno(),))
    assert isinstance(read(proc), ipc.Hello)
    say(proc, line)
    rc, err = finish(proc)
    assert rc == EXIT_REFUSED, err
    assert "smtp worker 1: refusing the server" in err and why in err
    assert not (tmp_path / "data" / "queue" / "journal" / "w1").exists()  # nothing was built


def test_a_descriptor_that_is_not_a_listening_socket_ends_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        proc = start(tmp_path, (s.fileno(),))
        assert isinstance(read(proc), ipc.Hello)
        say(proc, ipc.encode(ipc.hello()))
        rc, err = finish(proc)
    assert rc == 1
    assert "smtp worker 1 cannot run" in err and "not a listening stream socket" in err


def test_an_unknown_service_ends_it(tmp_path: Path) -> None:
    proc = start(tmp_path, (), service="gopher")
    rc, err = finish(proc)
    assert rc == 1
    assert "no such worker service gopher (known: imap, imaps, pop3, pop3s, smtp)" in err
