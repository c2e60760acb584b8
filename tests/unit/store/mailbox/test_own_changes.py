"""context Rule 8, scan Rules 1 and 8: Pigeon's own changes of ``cur/`` do not make the next
scan list the folder again, in this process or in another (the listing record is in the index
row); another program's change is still seen within ``scan.DIRTY_RELIST``."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from pigeon.clocks import SystemClock
from pigeon.store.mailbox import Account, MailStore, scan
from pigeon.store.mailbox.flags import cur_name, split_name
from pigeon.store.mailbox.scan import DIRTY_RELIST
from pigeon.store.maildir import MaildirStore
from tests.unit.store.mailbox.conftest import BOB, MSG


def _listed_at(account: Account) -> int:
    row = account._core.index.folder_by_name("INBOX")
    assert row is not None
    return row.listed_at


def test_own_writes_keep_the_listing_and_a_foreign_rename_is_seen(account: Account, maildir: Path) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    a = account.select("INBOX")
    b = account.select("INBOX")
    a.sync(), b.sync()
    listed = _listed_at(account)  # when cur/ was last listed
    a.store([1], "add", frozenset({"\\Flagged"}))
    account.append("INBOX", MSG, frozenset({"\\Deleted"}), None)
    changes = b.sync()
    assert [m.uid for m in changes.changed] == [1] and [m.uid for m in changes.new] == [4]
    assert b.expunge() == [4]
    a.sync()
    assert _listed_at(account) == listed  # no listing: the index had every change
    # Another program (mutt) marks message 2 \Seen by renaming its file.
    cur = maildir / "cur"
    meta = b.get(2)
    assert meta is not None
    os.rename(meta.path, cur / cur_name(split_name(meta.filename)[0], "S"))
    time.sleep(DIRTY_RELIST * 1.5)
    changes = a.sync()
    assert [(m.uid, "\\Seen" in m.flags) for m in changes.changed] == [(2, True)]
    assert _listed_at(account) > listed
    a.close(), b.close()


@pytest.fixture
def two(tmp_path: Path) -> tuple[MailStore, MailStore]:
    """Two stores of one mail root: what two processes (``[imap] processes = 2``) share is
    the Maildir and its index, nothing in memory."""
    root = tmp_path / "mail"
    return MailStore(root, "mx.example.com", SystemClock()), MailStore(root, "mx.example.com", SystemClock())


def test_another_process_s_writes_do_not_make_this_one_list_cur(
        two: tuple[MailStore, MailStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scan Rule 8: a STORE, an APPEND, a COPY into the folder and an EXPUNGE made through the
    other process's store reach this one's view through the index, with no listing of
    ``cur/``; a delivery to ``new/`` and a rename by another program are still found."""
    first, second = two
    mine, theirs = first.account(BOB), second.account(BOB)
    for _ in range(5):
        theirs.append("INBOX", MSG, frozenset(), None)
    box, other = mine.select("INBOX"), theirs.select("INBOX")
    listings: list[Path] = []
    real = scan._list_cur
    monkeypatch.setattr(scan, "_list_cur", lambda d: listings.append(d) or real(d))
    try:
        time.sleep(DIRTY_RELIST)
        box.sync()  # one listing, recorded in the index
        assert len(listings) == 1
        for uid in (1, 2, 3):
            other.store([uid], "add", frozenset({"\\Seen"}))
            assert [m.uid for m in box.sync().changed] == [uid]  # the index says it: no listing
        other.store([4], "add", frozenset({"\\Deleted"}))
        assert other.expunge() == [4]
        theirs.append("INBOX", MSG, frozenset(), None)
        other.copy([5], "INBOX")
        ch = box.sync()
        assert ch.expunged == [4] and [m.uid for m in ch.new] == [6, 7]
        assert len(listings) == 1
        # A program renames a file in the same mtime tick as the other process's last change:
        # hidden at first...
        other.store([1], "add", frozenset({"\\Answered"}))
        cur = tmp_path / "mail" / "example.com" / "bob" / "cur"
        mtime = os.stat(cur).st_mtime_ns
        meta = box.get(5)
        assert meta is not None
        os.rename(meta.path, cur / (meta.filename + "F"))
        os.utime(cur, ns=(mtime, mtime))
        assert [m.uid for m in box.sync().changed] == [1]
        time.sleep(DIRTY_RELIST)  # ...and seen once the last listing is DIRTY_RELIST old
        assert [(m.uid, m.flags) for m in box.sync().changed] == [(5, frozenset({"\\Flagged"}))]
        assert len(listings) == 2
        assert [m.uid for m in other.sync().changed] == [5]  # from the index: no listing
        assert len(listings) == 2
        # A delivery (the LDA writes new/) is found at once: new/ moved.
        MaildirStore(tmp_path / "mail", "mx.example.com").deliver(BOB, b"", io.BytesIO(MSG))
        assert [m.uid for m in box.sync().new] == [8]
        assert [m.uid for m in other.sync().new] == [8]
    finally:
        box.close(), other.close()
        first.close(), second.close()


def test_a_rolled_back_write_does_not_move_the_listing_record(account: Account, maildir: Path) -> None:
    """scan Rule 8: the record moves in the transaction of the change; one that fails leaves
    it, so the next scan lists ``cur/`` and sees what the failed write left on disk."""
    account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        box.sync()
        core = account._core
        row = core.index.folder_by_name("INBOX")
        assert row is not None
        with pytest.raises(RuntimeError):
            with core.index.write(durable=False) as conn, core.own_changes(conn, row.id, "INBOX"):
                (maildir / "cur" / "1700000000.M1P1Q1.mx:2,").write_bytes(MSG)  # a file, then an error
                raise RuntimeError("the write fails")
        after = core.index.folder_by_name("INBOX")
        assert after is not None and after.listed_cur == row.listed_cur
        assert [m.uid for m in box.sync().new] == [2]  # listed again: the file is found
    finally:
        box.close()


HOLD_LOCK = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_reader_waits_for_a_writer_under_way_then_lists(
        account: Account, maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scan Rule 9: while another process holds the index's write lock, a ``cur/`` that moved
    ahead of the record is taken for that writer's change not yet committed (no listing, on
    the event loop's path too); once the lock is free, a change nobody committed is found."""
    import subprocess
    import sys

    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    core = account._core
    listings: list[Path] = []
    real = scan._list_cur
    monkeypatch.setattr(scan, "_list_cur", lambda d: listings.append(d) or real(d))
    time.sleep(DIRTY_RELIST)
    box.sync()
    assert len(listings) == 1 and not core.index.writer_active()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(maildir / "pigeon-index.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert core.index.writer_active()
        meta = box.get(2)
        assert meta is not None
        os.rename(meta.path, maildir / "cur" / (meta.filename + "F"))  # a rename, no commit yet
        assert core.unchanged(meta_folder(account), box.highestmodseq, box.uidnext)
        assert box.sync_nowait(box.tick()) is not None and len(listings) == 1
    finally:
        holder.communicate("go\n", timeout=30)
    assert not core.index.writer_active()
    changes = box.sync()  # nobody committed it: another program's change, found now
    assert [(m.uid, m.flags) for m in changes.changed] == [(2, frozenset({"\\Flagged"}))]
    assert len(listings) == 2
    box.close()


def meta_folder(account: Account) -> int:
    row = account._core.index.folder_by_name("INBOX")
    assert row is not None
    return row.id


def test_a_write_transaction_of_this_process_is_a_writer_under_way(account: Account) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    index = account._core.index
    assert not index.writer_active()
    with index.write(durable=False):
        assert index.writer_active()
    assert not index.writer_active()
