"""Issue 14 at the session level: literals before login are refused unread, and big APPENDs go
to an anonymous spool file instead of memory."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from pigeon.core.address import parse_address
from pigeon.store.mailbox import Account, MailStore
from tests.unit.imapd.helpers import ALICE, RawClient, ServerThread

MB = 1000 * 1000


@pytest.fixture
def server(store: MailStore, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(store, tmp_path, max_message_size=30 * MB) as srv:
        yield srv


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the spool files the sessions open (``Account.temporary_file``)."""
    opened: list[int] = []
    real = Account.temporary_file

    def counting(self: Account) -> BinaryIO:
        opened.append(1)
        return real(self)

    monkeypatch.setattr(Account, "temporary_file", counting)
    return opened


def message(size: int, seed: bytes = b"m") -> bytes:
    """A message of exactly ``size`` octets with CRLF lines of 78 characters."""
    head = b"Subject: big " + seed + b"\r\n\r\n"
    line = (seed * 76)[:76] + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return head + body[: size - len(head)]


def fetch_digest(c: RawClient, tag: bytes, seq: int) -> tuple[int, bytes]:
    """(RFC822.SIZE, sha256 of BODY[]) of message ``seq`` of the selected mailbox."""
    resp = c.cmd(tag, b"FETCH %d (RFC822.SIZE BODY.PEEK[])" % seq)
    m = re.match(rb"\* \d+ FETCH \(RFC822\.SIZE (\d+) BODY\[\] \{(\d+)\}\r\n", resp[0])
    assert m is not None, resp[0][:200]
    start = m.end()
    data = resp[0][start : start + int(m.group(2))]
    return int(m.group(1)), hashlib.sha256(data).digest()


# --- before login -------------------------------------------------------------------------------


def test_preauth_literal_over_8k_is_bad_without_continuation(server: ServerThread) -> None:
    with RawClient(server.port) as c:
        c.send(b"a LOGIN {20000}\r\n")
        assert c.line() == b"a BAD Literal of 20000 octets is too big before authentication\r\n"
        c.send(b"b APPEND INBOX {500000}\r\n")
        assert c.line() == b"b BAD Literal of 500000 octets is too big before authentication\r\n"
        assert c.cmd(b"c", b"NOOP") == [b"c OK NOOP completed\r\n"]
        c.login()  # a long password still fits: {8192} is read
        assert c.cmd(b"d", b"NOOP") == [b"d OK NOOP completed\r\n"]


def test_preauth_big_non_sync_literal_gets_bad_bye_and_close(server: ServerThread) -> None:
    with RawClient(server.port) as c:
        c.send(b"a APPEND INBOX {52428799+}\r\n" + b"x" * 1_000_000)
        assert c.line() == b"a BAD Literal of 52428799 octets is too big before authentication\r\n"
        assert c.line() == b"* BYE Refused a literal of 52428799 octets before authentication\r\n"
        c.sock.settimeout(5)
        try:
            while c.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass  # closed while our octets were still arriving: a reset is a close too


# --- big APPEND after login -----------------------------------------------------------------------


def test_big_append_streams_to_a_file_and_arrives_intact(server: ServerThread, spools: list[int]) -> None:
    data = message(20 * MB)
    view = memoryview(data)
    with RawClient(server.port, timeout=60) as c:
        c.login()
        tracemalloc.start()
        try:
            c.send(b"a APPEND INBOX (\\Flagged) {%d}\r\n" % len(data))
            assert c.line() == b"+ Ready for literal data\r\n"
            for i in range(0, len(data), 1 << 20):
                c.sock.sendall(view[i : i + (1 << 20)])
            c.send(b"\r\n")
            resp = c.until(b"a")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert resp[-1].startswith(b"a OK [APPENDUID ")
        assert peak < 4 * MB  # the whole message was 20 MB; the old session held it twice
        assert spools == [1]
        c.cmd(b"s", b"SELECT INBOX")
        assert fetch_digest(c, b"f", 1) == (len(data), hashlib.sha256(data).digest())


def test_multiappend_of_big_and_small_messages(server: ServerThread, spools: list[int]) -> None:
    msgs = [message(300_000, b"a"), message(2000, b"b"), message(5 * MB, b"c")]
    with RawClient(server.port, timeout=60) as c:
        c.login()
        c.send(b"a APPEND INBOX " + b" ".join(b"{%d+}\r\n" % len(m) + m for m in msgs[:-1]) +
               b" ~{%d}\r\n" % len(msgs[-1]))
        assert c.line() == b"+ Ready for literal data\r\n"
        c.send(msgs[-1] + b"\r\n")
        resp = c.until(b"a")
        assert re.match(rb"a OK \[APPENDUID \d+ 1:3\] APPEND completed", resp[-1]), resp
        assert spools == [1]  # one file per command
        c.cmd(b"s", b"SELECT INBOX")
        for i, m in enumerate(msgs, 1):
            assert fetch_digest(c, b"f%d" % i, i) == (len(m), hashlib.sha256(m).digest())


def test_nul_in_a_big_plain_literal_is_bad_and_nothing_is_appended(server: ServerThread) -> None:
    good = message(100_000)
    bad = good[:50_000] + b"\x00" + good[50_001:]
    with RawClient(server.port, timeout=30) as c:
        c.login()
        c.send(b"a APPEND INBOX {%d+}\r\n" % len(good) + good + b" {%d+}\r\n" % len(bad) + bad + b"\r\n")
        assert c.until(b"a")[-1] == b"a BAD NUL in literal (use literal8)\r\n"
        c.send(b"b APPEND INBOX ~{%d+}\r\n" % len(bad) + bad + b"\r\n")  # literal8 may hold NUL
        assert c.until(b"b")[-1].startswith(b"b OK [APPENDUID ")
        assert c.cmd(b"c", b"STATUS INBOX (MESSAGES)")[0] == b"* STATUS INBOX (MESSAGES 1)\r\n"


class _FullDisk:
    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass


def test_spool_on_a_full_disk_is_no_overquota(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Account, "temporary_file", lambda self: _FullDisk())
    data = message(1 * MB)
    with RawClient(server.port, timeout=30) as c:
        c.login()
        c.send(b"a APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
        assert c.until(b"a")[-1] == b"a NO [OVERQUOTA] Could not receive the message: No space left on device\r\n"
        assert c.cmd(b"b", b"NOOP") == [b"b OK NOOP completed\r\n"]  # the literal was read to its end


def _spool_files(tmp_dir: Path) -> list[str]:
    """Files under ``tmp_dir`` this process holds open (the server runs in this process)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(tmp_dir) + "/"):
            out.append(target)
    return out


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_spool_is_an_anonymous_file_gone_when_the_client_vanishes(server: ServerThread, store: MailStore) -> None:
    tmp_dir = store.account(parse_address(ALICE))._core.maildir / "tmp"
    with RawClient(server.port, timeout=30) as c:
        c.login()
        c.send(b"a APPEND INBOX {%d+}\r\n" % (10 * MB) + b"x" * MB)
        assert _wait(lambda: bool(_spool_files(tmp_dir)))  # the message goes to the account's tmp/
        assert os.listdir(tmp_dir) == []  # without a name there
    assert _wait(lambda: not _spool_files(tmp_dir))  # closed, and so gone, with the session
