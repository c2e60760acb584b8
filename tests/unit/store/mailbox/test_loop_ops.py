"""view Rules 15-16: the event loop's reads (``read_nowait``, ``cache_many_nowait``) and STORE
(``store(wait=False)``) give what the waiting calls give, and decline (None, ``WouldWait``,
nothing changed) whenever they would have to wait."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pigeon.store.mailbox import Account, MailboxError, WouldWait, files, scan
from pigeon.store.mailbox.index import LOCK_NAME
from tests.unit.store.mailbox.conftest import MSG


@contextmanager
def _held(account: Account) -> Iterator[None]:
    """The account lock held by another thread (a writer in its fsync)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with account._core.lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join()


def test_read_nowait_reads_the_known_file_and_declines_a_moved_one(account: Account, maildir: Path) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        with _held(account):  # no lock is taken
            assert box.read_nowait(1) == box.read(1)
            assert box.read_nowait(1, header_only=True) == box.read_header(1)
            assert box.read_nowait(99) is None  # not in the view
        # another program renames the file (a flag change): the loop declines, read finds it
        cur = maildir / "cur"
        (name,) = [n for n in os.listdir(cur) if n == os.path.basename(box.get(2).path)]  # type: ignore[union-attr]
        os.rename(cur / name, cur / (name.split(":2,")[0] + ":2,S"))
        assert box.read_nowait(2) is None
        assert box.read(2) == box.read_nowait(1)  # same content, found again (Rule 10)
    finally:
        box.close()


def test_cache_many_nowait_equals_cache_many_and_declines_a_busy_connection(account: Account) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        box.cache_put(1, "envelope", b"(one)")
        box.cache_put(3, "envelope", b"(three)")
        with _held(account):
            got = box.cache_many_nowait([1, 2, 3], ["envelope"])
        assert got == box.cache_many([1, 2, 3], ["envelope"]) == {(1, "envelope"): b"(one)", (3, "envelope"): b"(three)"}
        with account._core.loop_reader_lock:  # in use: decline at once
            assert box.cache_many_nowait([1, 2, 3], ["envelope"]) is None
    finally:
        box.close()


def test_store_nowait_stores_as_store_does(account: Account) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    box, other = account.select("INBOX"), account.select("INBOX")
    try:
        time.sleep(scan.DIRTY_RELIST)
        box.sync(), other.sync()
        changed, failed = box.store([1, 2], "add", frozenset({"\\Flagged", "$Work"}), wait=False)
        assert [(m.uid, m.flags) for m in changed] == [(1, frozenset({"\\Flagged", "$Work"})),
                                                       (2, frozenset({"\\Flagged", "$Work"}))]
        assert failed == []
        assert [(m.uid, m.flags) for m in other.sync().changed] == [(m.uid, m.flags) for m in changed]
        assert "F" in os.path.basename(box.get(1).path).split(":2,")[1]  # type: ignore[union-attr]
    finally:
        box.close()
        other.close()


def test_store_nowait_declines_without_changing_anything(account: Account, maildir: Path) -> None:
    for _ in range(2):
        account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        time.sleep(scan.DIRTY_RELIST)
        box.sync()
        before = (box.highestmodseq, sorted(os.listdir(maildir / "cur")))
        with _held(account), pytest.raises(WouldWait):  # the account lock is held
            box.store([1], "add", frozenset({"\\Seen"}), wait=False)
        # another process holds the index's write lock (index Rule 8)
        fd = os.open(maildir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only holds the lock
            fcntl.lockf(fd, fcntl.LOCK_EX)
            time.sleep(30)
            os._exit(0)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0, os.SEEK_SET)
                    time.sleep(0.01)
                except OSError:
                    break  # the child holds it
            with pytest.raises(WouldWait):
                box.store([1], "add", frozenset({"\\Seen"}), wait=False)
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(fd)
        # a scan is due (another program dropped a file into new/)
        (maildir / "new" / "1700000000.M1P1.other:2,").write_bytes(MSG)
        os.utime(maildir / "new", ns=(1, 1))
        with pytest.raises(WouldWait):
            box.store([1], "add", frozenset({"\\Seen"}), wait=False)
        assert (box.highestmodseq, sorted(os.listdir(maildir / "cur"))) == before
        assert box.flags_of(1) == frozenset()
        changed, _ = box.store([1], "add", frozenset({"\\Seen"}))  # the waiting STORE does it
        assert [(m.uid, m.flags) for m in changed] == [(1, frozenset({"\\Seen"}))]
    finally:
        box.close()


def test_read_follows_the_index_after_another_sessions_changes(account: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    """view Rule 10: a file renamed by another session's STORE is found by the index's name,
    one expunged is EXPUNGEISSUED, both without listing cur/."""
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    box, other = account.select("INBOX"), account.select("INBOX")
    try:
        other.store([1], "add", frozenset({"\\Seen"}))
        other.store([2], "add", frozenset({"\\Deleted"}))
        other.expunge()
        listed: list[object] = []
        monkeypatch.setattr(files, "find_by_base", lambda *a: listed.append(a))
        assert box.read(1) == box.read(3)  # the same content: found at its new name
        with pytest.raises(MailboxError) as err:
            box.read_header(2)
        assert err.value.code == "EXPUNGEISSUED"
        assert listed == []
    finally:
        box.close()
        other.close()
