"""A full disk, on a real small file system (issue 14, point 4): the real ``pigeon serve`` with
its data directory on a size-limited tmpfs that the test mounts, fills and frees.

1. An 8 MiB data directory: the start-up leaves it (almost) free and every TLS port opens;
   with the disk full, SMTP answers 452 4.3.1, never 250; IMAP SELECT, FETCH, STORE \\Deleted
   and EXPUNGE work on a server restarted on the full disk, and the expunge frees the space;
   APPEND is NO [OVERQUOTA]; once there is room mail is accepted and delivered again.
2. A data directory large enough for a made-ahead journal segment: mail accepted into it
   while the disk is full (a 250 that rests on blocks the segment already holds) is held,
   shown by ``pigeon queue list``, and delivered without a restart once space is freed: on
   its own, and at once with ``pigeon queue flush``.
3. The same with ``[smtp] processes = 2``: ``pigeon queue flush`` reaches a message held by
   the SMTP worker process (SIGUSR1).

The tmpfs is mounted and unmounted by ``tests.fulldisk.small_fs`` (root needed; on CI a mount
that fails is a failure, never a skip).
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fulldisk import fill, free_bytes, small_fs
from tests.integration.harness import Server, free_port

pytestmark = pytest.mark.integration

PASSWORD = "secret-pw-123"
ALICE = "alice@example.test"
SEGMENT = 16 * 1024 * 1024  # pigeon.durable.journal.SEGMENT_BYTES


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's self-signed development certificate
    return ctx


def send(srv: Server, subject: str, body: bytes = b"hello\r\n") -> tuple[int, str]:
    """One message to alice over a raw SMTP session: (code, text) of the reply to the data."""
    with srv.smtp() as c:
        c.greet()
        assert c.cmd("MAIL FROM:<sender@remote.example>")[0] == 250
        assert c.cmd(f"RCPT TO:<{ALICE}>")[0] == 250
        code, lines = c.data(b"From: sender@remote.example\r\nTo: " + ALICE.encode() +
                             b"\r\nSubject: " + subject.encode() + b"\r\n\r\n" + body)
        c.cmd("QUIT")
    return code, " ".join(lines)


def subjects(srv: Server) -> list[str]:
    out = []
    for raw in srv.messages(ALICE):
        m = re.search(rb"^Subject: (.*)$", raw, re.MULTILINE)
        out.append(m.group(1).decode().strip() if m else "")
    return sorted(out)


def wait(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def wait_spare(journal: Path) -> None:
    """Until ``journal`` has its segment made ahead (journal Rule 7): the next message's
    segment is then that one, whose blocks exist."""
    spare = journal / "spare"
    wait(lambda: spare.exists() and spare.stat().st_size == SEGMENT, f"{spare} made")
    time.sleep(0.2)  # its fdatasync, and the journal seeing it done


def test_a_tiny_disk_is_not_eaten_tls_comes_up_smtp_says_452_and_imap_frees_space(tmp_path: Path) -> None:
    smtps, imaps, pop3s = free_port(), free_port(), free_port()
    srv = Server(tmp_path, extra_toml="[auth]\nfailure_delay = 0\n",
                 listen_toml=f'submissions = ["127.0.0.1:{smtps}"]\nimaps = ["127.0.0.1:{imaps}"]\n'
                             f'pop3s = ["127.0.0.1:{pop3s}"]')
    with small_fs(srv.data_dir, "8m") as data:
        srv.add_user(ALICE, PASSWORD)
        try:
            srv.start()  # waits for every port of listen_toml: 465, 993 and 995 are up
            for port in (smtps, imaps, pop3s):
                assert port_open(port)
            tls = data / "tls"
            assert (tls / "selfsigned.crt").stat().st_size > 0 and (tls / "selfsigned.key").stat().st_size > 0
            journal = data / "queue" / "journal" / "main"
            assert not (journal / "spare").exists()  # the probe found an 8 MiB spare here
            assert free_bytes(data) > 6 * 1024 * 1024

            body = (b"x" * 78 + b"\r\n") * 1250  # 100 KB in lines SMTP allows
            for i in range(5):
                assert send(srv, f"big {i}", body)[0] == 250
            wait(lambda: len(srv.messages(ALICE)) == 5, "five messages delivered")
            assert not [p for p in journal.iterdir() if p.name.startswith("seg.")]  # queue files took them
            c = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=insecure(), timeout=15)
            c.login(ALICE, PASSWORD)  # alice has used IMAP before: her index exists
            assert c.select("INBOX") == ("OK", [b"5"])
            c.logout()

            filler = fill(data)
            code, text = send(srv, "while full")
            assert (code, text[:5]) == (452, "4.3.1")
            assert srv.queue_list() == []  # nothing half-accepted

            srv.stop()  # a start on the full disk: the index opens without room for its shm
            srv.start()
            assert port_open(imaps)
            c = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=insecure(), timeout=15)
            try:
                c.login(ALICE, PASSWORD)
                typ, data_ = c.select("INBOX")
                assert (typ, data_) == ("OK", [b"5"])
                typ, fetched = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)")
                assert typ == "OK" and b"Subject: big 0" in fetched[0][1]  # type: ignore[index]
                typ, appended = c.append("INBOX", None, None, b"Subject: appended\r\n\r\nhi\r\n")
                assert typ == "NO" and appended[0].startswith(b"[OVERQUOTA]"), appended
                before = free_bytes(data)
                typ, _ = c.store("1:3", "+FLAGS", "(\\Deleted)")
                assert typ == "OK"
                typ, expunged = c.expunge()
                assert typ == "OK" and sorted(expunged) == [b"1", b"2", b"3"]
                assert free_bytes(data) >= before + 250_000  # deleting freed the space
                typ, data_ = c.select("INBOX")
                assert (typ, data_) == ("OK", [b"2"])
                c.logout()
            finally:
                if c.state != "LOGOUT":
                    c.shutdown()
            assert "SERVERBUG" not in srv.log and "Traceback" not in srv.log

            filler.unlink()
            assert send(srv, "after")[0] == 250
            wait(lambda: "after" in subjects(srv), "delivery once there is room")
        finally:
            srv.stop()


def queue_ids(srv: Server, state: str) -> list[str]:
    return sorted(m["id"] for m in srv.queue_list() if m["state"] == state)


def test_mail_accepted_into_the_journal_while_full_is_held_listed_and_delivered_without_restart(
        tmp_path: Path) -> None:
    srv = Server(tmp_path)
    # Room for the journal to make a segment ahead (journal Rule 8: four segments free), and
    # the one the first message takes.
    with small_fs(srv.data_dir, f"{6 * SEGMENT // (1024 * 1024)}m") as data:
        srv.add_user(ALICE, PASSWORD)
        try:
            srv.start()
            journal = data / "queue" / "journal" / "main"
            wait_spare(journal)
            assert send(srv, "first")[0] == 250
            wait(lambda: subjects(srv) == ["first"], "the first message delivered")
            (seg,) = [p for p in journal.iterdir() if p.name.startswith("seg.")]
            assert seg.stat().st_size == SEGMENT  # the spare, renamed: made ahead

            filler = fill(data)
            accepted = []
            for i in range(3):
                code, text = send(srv, f"held {i}")
                assert code == 250, text  # the segment's blocks exist: the entry is durable
                accepted.append(text.split()[-1])
            wait(lambda: len(queue_ids(srv, "journal")) == 3, "three messages held", timeout=15)
            listed = [m for m in srv.queue_list() if m["state"] == "journal"]
            assert sorted(m["id"] for m in listed) == sorted(accepted)
            for m in listed:
                (rcpt,) = m["recipients"]
                assert rcpt["status"] == "deferred" and "held in the intake journal" in rcpt["last_reply"]

            filler.unlink()  # no restart, no flush: the lane tries again on its own
            wait(lambda: len(subjects(srv)) == 4, "the held messages delivered", timeout=15)
            assert subjects(srv) == ["first", "held 0", "held 1", "held 2"]
            wait(lambda: srv.queue_list() == [], "the queue empty")

            filler = fill(data)
            code, text = send(srv, "flushed")
            assert code == 250, text
            wait(lambda: len(queue_ids(srv, "journal")) == 1, "one more message held", timeout=15)
            # Its own tries come after 2, 4, then 8 s: free the space once the next one is 8 s
            # away, so that it is the flush that moves it, even when each `pigeon` command
            # takes a second to start on a loaded machine.
            srv.wait_log(rf"{text.split()[-1]}: cannot move the message into the queue .* next try in 8 s",
                         timeout=20)
            filler.unlink()
            out = srv.cli("queue", "flush").stdout
            assert int(out.split()[0]) >= 1, out  # the held message is what flush moved
            wait(lambda: "flushed" in subjects(srv), "the flushed message delivered", timeout=5)
            assert len(srv.messages(ALICE)) == 5  # each exactly once
            assert "Traceback" not in srv.log
        finally:
            srv.stop()



def journal_ids(journal: Path) -> set[str]:
    from pigeon.durable.journal import pending

    return {e.id for e in pending(journal, quiet=True)}


def test_queue_flush_reaches_mail_held_by_an_smtp_worker_process(tmp_path: Path) -> None:
    srv = Server(tmp_path, extra_toml="[smtp]\nprocesses = 2\n")
    with small_fs(srv.data_dir, f"{8 * SEGMENT // (1024 * 1024)}m") as data:
        srv.add_user(ALICE, PASSWORD)
        try:
            srv.start()
            worker = data / "queue" / "journal" / "w1"
            wpid = srv.wait_log(r"smtp worker 1 started pid=(\d+)").group(1)
            wait(worker.is_dir, "the worker's journal")
            wait_spare(worker)
            sent = 0
            # Connections go to whichever process accepts first: send until the worker has
            # taken one (its journal then has a made-ahead segment).
            while not any(p.name.startswith("seg.") for p in worker.iterdir()):
                assert sent < 60, "the worker process never took a connection"
                assert send(srv, f"warm {sent}")[0] == 250
                sent += 1
            wait(lambda: len(srv.messages(ALICE)) == sent, "the first messages delivered")

            filler = fill(data)
            held: set[str] = set()
            while not held:
                assert sent < 120, "the worker process never took a connection while full"
                code, text = send(srv, f"full {sent}")
                assert code == 250, text
                sent += 1
                held = journal_ids(worker) & {text.split()[-1]}
            wait(lambda: bool(held & set(queue_ids(srv, "journal"))), "the worker's message listed")
            # As above: free the space once the held message's own next try is 8 s away, so that
            # it is the flush that moves it (its 4 s try raced the flush on a loaded machine).
            [qid] = held
            srv.wait_log(rf"{qid}: cannot move the message into the queue .* next try in 8 s", timeout=20)
            filler.unlink()
            srv.cli("queue", "flush")
            srv.wait_log(rf"pigeon\[{wpid}\] INFO pigeon\.qmgr\.lane: trying \d+ held message")
            wait(lambda: len(srv.messages(ALICE)) == sent, "every message delivered", timeout=10)
            assert srv.queue_list() == []
        finally:
            srv.stop()
