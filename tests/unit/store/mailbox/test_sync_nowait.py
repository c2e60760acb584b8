"""view Rule 12: ``Mailbox.sync_nowait``, the event loop's sync, gives what ``sync`` gives,
never waits for the account lock, and hands back None whenever it would have to wait or write."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pigeon.store.mailbox import Account, Changes
from pigeon.store.mailbox import scan
from tests.unit.store.mailbox.conftest import MSG
from tests.unit.store.mailbox.test_loop_ops import _held as held_lock


def _plain(ch: Changes | None) -> object:
    assert ch is not None
    return ([(m.uid, m.flags, m.modseq) for m in ch.new], ch.expunged,
            [(m.uid, m.flags, m.modseq) for m in ch.changed])


def test_nowait_equals_sync_and_ignores_a_held_account_lock(account: Account) -> None:
    for _ in range(6):
        account.append("INBOX", MSG, frozenset(), None)
    writer, a, b = (account.select("INBOX") for _ in range(3))
    try:
        time.sleep(scan.DIRTY_RELIST)
        a.sync(), b.sync()  # both at the same state, a fresh listing in the scan memo
        writer.store([1, 2], "add", frozenset({"\\Flagged"}))
        writer.store([3], "add", frozenset({"$Work"}))
        writer.store([4], "add", frozenset({"\\Deleted"}))
        writer.expunge()
        with held_lock(account):  # a writer in its fsync, as far as the lock can tell
            quick = a.sync_nowait(a.tick())
        assert _plain(quick) == _plain(b.sync())
        assert quick is not None and quick.expunged == [4] and quick.new == []
        assert [(m.uid, m.flags) for m in quick.changed] == [
            (1, frozenset({"\\Flagged"})), (2, frozenset({"\\Flagged"})), (3, frozenset({"$Work"}))]
        assert list(a.uids()) == list(b.uids()) == [1, 2, 3, 5, 6]
        assert a.highestmodseq == b.highestmodseq and a.uidnext == b.uidnext
        assert _plain(a.sync_nowait(a.tick())) == ([], [], [])
    finally:
        for box in (writer, a, b):
            box.close()


def test_nowait_declines_a_due_scan_and_a_recent_claim(account: Account, maildir: Path) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        time.sleep(scan.DIRTY_RELIST)
        box.sync()
        # another program drops a file into new/: only a scan (a write) can take it in
        (maildir / "new" / "1700000000.M1P1.other:2,").write_bytes(MSG)
        os.utime(maildir / "new", ns=(1, 1))
        assert box.sync_nowait(box.tick()) is None
        ch = box.sync()
        assert [m.uid for m in ch.new] == [2] and box.is_recent(2)
        # a message no view has claimed yet: its \Recent claim is a write
        account.append("INBOX", MSG, frozenset(), None)
        assert box.sync_nowait(box.tick()) is None
        assert [m.uid for m in box.sync().new] == [3] and box.is_recent(3)
        # once another view claimed it, a read-write view takes it in without writing
        other = account.select("INBOX")
        try:
            time.sleep(scan.DIRTY_RELIST)
            other.sync()
            account.append("INBOX", MSG, frozenset(), None)
            assert [m.uid for m in other.sync().new] == [4] and other.is_recent(4)
            got = box.sync_nowait(box.tick())
            assert got is not None and [m.uid for m in got.new] == [4] and not box.is_recent(4)
        finally:
            other.close()
    finally:
        box.close()
