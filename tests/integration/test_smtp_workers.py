"""``[smtp] processes = N``: SMTP worker processes on the same port (smtpd.worker, smtpd.workers).

The real server with one worker. Both processes accept from the same listening sockets (the
server's, handed to the worker), so whichever is free takes the next connection; to be sure
which process takes a connection, a test stops the other one (SIGSTOP, then SIGCONT: both are
processes the test started) while it connects, and checks by the log's process ids.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import time

from tests.integration.conftest import MakeServer
from tests.integration.harness import Server

CONNECTIONS = 16


def _send(srv: Server, n: int, tag: str, *, sender: str = "someone@remote.test",
          rcpts: tuple[str, ...] = ("alice@example.test",), options: tuple[str, ...] = (),
          first: int = 0) -> None:
    for i in range(first, first + n):
        with smtplib.SMTP(srv.host, srv.smtp_port, timeout=15) as c:
            c.sendmail(sender, list(rcpts), f"Subject: {tag}-{i}\r\n\r\nbody {tag} {i}\r\n".encode(),
                       rcpt_options=list(options))


def _worker_pid(srv: Server) -> int:
    """The worker's pid, once the server says it started (after its workers listen)."""
    srv.wait_log(r"pigeon started")
    m = srv.wait_log(r"smtp worker 1 started pid=(\d+)")
    return int(m.group(1))


def _send_while_stopped(srv: Server, pid: int, n: int, tag: str, **kw: object) -> None:
    """Send with process ``pid`` stopped: the other process must take every connection."""
    os.kill(pid, signal.SIGSTOP)
    try:
        _send(srv, n, tag, **kw)  # type: ignore[arg-type]
    finally:
        os.kill(pid, signal.SIGCONT)


def _pids_that(srv: Server, event: str) -> set[int]:
    return {int(p) for p in re.findall(rf"pigeon\[(\d+)\] INFO pigeon\.mail: \S+ {event}\b", srv.log)}


def test_both_processes_accept_and_deliver(make_server: MakeServer) -> None:
    srv = make_server(extra_toml="[smtp]\nprocesses = 2\n")
    srv.add_user("alice@example.test")
    srv.start()
    worker = _worker_pid(srv)
    half = CONNECTIONS // 2
    _send_while_stopped(srv, srv.pid, half, "spread")  # the worker takes these
    assert _pids_that(srv, "received") == {worker}
    _send_while_stopped(srv, worker, half, "spread", first=half)  # and the server these
    msgs = srv.wait_messages("alice@example.test", CONNECTIONS)
    assert sorted(int(m.split(b"Subject: spread-")[1].split(b"\n")[0]) for m in msgs) == list(range(CONNECTIONS))
    received = _pids_that(srv, "received")
    assert received == {srv.pid, worker}, received  # both processes took connections
    assert worker in _pids_that(srv, "delivered")  # the worker's fast lane delivered its own
    assert srv.queue_list() == []
    assert srv.stop() == 0
    assert "smtp worker 1 pid=%d ended status=0" % worker in srv.log


def test_worker_hands_over_what_it_cannot_finish(make_server: MakeServer) -> None:
    """A success DSN (the fast lane spills, the server records the results and sends the
    notice) and mail for a relay domain (committed to the queue files, scheduled by the server:
    deferred, as the tests' DNS answers SERVFAIL)."""
    srv = make_server(extra_toml='relay_domains = ["backup.test"]\n[smtp]\nprocesses = 2\n')
    srv.add_user("alice@example.test")
    srv.add_user("bob@example.test")
    srv.start()
    worker = _worker_pid(srv)
    _send_while_stopped(srv, srv.pid, CONNECTIONS, "dsn", sender="bob@example.test",
                        options=("NOTIFY=SUCCESS",))  # all taken by the worker
    srv.wait_messages("alice@example.test", CONNECTIONS)
    notices = srv.wait_messages("bob@example.test", CONNECTIONS)
    assert all(b"Action: delivered" in n for n in notices)
    assert worker in _pids_that(srv, "received")
    _send_while_stopped(srv, srv.pid, CONNECTIONS, "away", rcpts=("carol@backup.test",),
                        sender="bob@example.test")
    queued = srv.wait_queue(lambda q: len(q) == CONNECTIONS and all(
        m["state"] == "deferred" for m in q), timeout=30)
    assert len(queued) == CONNECTIONS
    assert _pids_that(srv, "received") == {worker}  # the server only scheduled them


def test_a_killed_worker_is_restarted_and_its_journal_taken_over(make_server: MakeServer) -> None:
    srv = make_server(extra_toml="[smtp]\nprocesses = 2\n")
    srv.add_user("alice@example.test")
    srv.start()
    worker = _worker_pid(srv)
    os.kill(worker, signal.SIGKILL)  # the worker our server started, by its pid
    srv.wait_log(rf"smtp worker 1 pid={worker} ended status=-9")
    deadline = time.monotonic() + 20
    while len(re.findall(r"smtp worker 1 started pid=\d+", srv.log)) < 2:
        assert time.monotonic() < deadline, "the worker was not restarted"
        time.sleep(0.1)
    again = int(re.findall(r"smtp worker 1 started pid=(\d+)", srv.log)[1])
    srv.wait_log(r"pigeon\[%d\] INFO pigeon.net.listener: listening service=smtp" % again)
    _send_while_stopped(srv, srv.pid, CONNECTIONS, "after")  # the new worker has the sockets too
    srv.wait_messages("alice@example.test", CONNECTIONS)
    assert again in _pids_that(srv, "received")
    assert srv.stop() == 0


def test_workers_stop_when_the_server_is_killed(make_server: MakeServer) -> None:
    srv = make_server(extra_toml="[smtp]\nprocesses = 2\n")
    srv.add_user("alice@example.test")
    srv.start()
    worker = _worker_pid(srv)
    srv.kill()
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{worker}") and _state(worker) != "Z":
        assert time.monotonic() < deadline, "the orphaned worker kept running"
        time.sleep(0.1)
    srv.start()  # its journal is free again: recovery goes through
    _send(srv, 4, "again")
    srv.wait_messages("alice@example.test", 4)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
