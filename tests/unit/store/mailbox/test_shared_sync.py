"""Views of one folder share a scan (context Rule 6) and the rows a sync reads (view Rule 11),
without losing anything a view must report: a delivery dropped into ``new/`` by another program,
a view's own change, another view's change."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from pigeon.imapd.syncbatch import SyncBatches
from pigeon.store.changes import ChangeBus
from pigeon.core.address import Address
from pigeon.store.mailbox import Account, Changes, MailboxError, MailStore, sync_views
from tests.unit.store.mailbox.conftest import MSG


def _drop(maildir: Path, name: str) -> None:
    """A delivery by another program: tmp/ then new/."""
    tmp = maildir / "tmp" / name
    tmp.write_bytes(MSG)
    os.rename(tmp, maildir / "new" / name)


def test_views_woken_together_share_one_scan_and_each_sees_the_message(account: Account, maildir: Path) -> None:
    views = [account.select("INBOX") for _ in range(5)]
    core = views[0]._core  # noqa: SLF001 — the shared account state under test
    _drop(maildir, "1.a.host")
    since = views[0].tick()
    scans = []
    real = core.rescan

    def counting(row, force=False, since=None):  # type: ignore[no-untyped-def]
        before = dict(core.scanned)
        out = real(row, force, since)
        scans.append(core.scanned != before)
        return out

    core.rescan = counting  # type: ignore[method-assign]
    got = [v.sync(since) for v in views]
    assert [[m.uid for m in c.new] for c in got] == [[1]] * 5
    assert scans == [True, False, False, False, False]  # one scan stood for all five
    # a later sync (since now) scans again: the scan before it started too early
    _drop(maildir, "2.b.host")
    later = views[0].sync(views[0].tick())
    assert [m.uid for m in later.new] == [2]
    assert scans[-1] is True
    for v in views:
        v.close()


def test_shared_rows_keep_each_views_own_change_and_anothers(account: Account) -> None:
    account.append("INBOX", MSG, frozenset(), 1_700_000_000.0)
    a, b, c = (account.select("INBOX") for _ in range(3))
    a.store([1], "add", frozenset({"\\Flagged"}))  # a's own change: not reported back to a
    got_a, got_b, got_c = (v.sync(v.tick()) for v in (a, b, c))
    assert got_a.changed == []
    assert [(m.uid, m.flags) for m in got_b.changed] == [(1, frozenset({"\\Flagged"}))]
    assert [(m.uid, m.flags) for m in got_c.changed] == [(1, frozenset({"\\Flagged"}))]
    for v in (a, b, c):
        v.close()


def test_sync_batches_give_each_session_its_own_result(account: Account, maildir: Path) -> None:
    views = [account.select("INBOX") for _ in range(4)]
    account.create("Other")
    other = account.select("Other")
    _drop(maildir, "3.c.host")
    batches = SyncBatches()

    async def main() -> list[object]:
        return await asyncio.gather(*(batches.sync(v) for v in [*views, other]), return_exceptions=True)

    out = asyncio.run(main())
    assert [[m.uid for m in c.new] for c in out[:4]] == [[1]] * 4  # type: ignore[union-attr]
    assert out[4].new == []  # type: ignore[union-attr]
    account.delete("Other")  # a deleted folder is that session's error only

    async def again() -> list[object]:
        return await asyncio.gather(batches.sync(other), batches.sync(views[0]), return_exceptions=True)

    gone, fine = asyncio.run(again())
    assert isinstance(gone, MailboxError) and gone.code == "NONEXISTENT"
    assert fine.new == []  # type: ignore[union-attr]
    for v in views:
        v.close()


def test_one_notice_enters_a_loop_once_and_wakes_all_its_waiters(tmp_path: Path) -> None:
    bus = ChangeBus()

    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        calls = []
        real = loop.call_soon_threadsafe

        def counting(cb, *args):  # type: ignore[no-untyped-def]
            calls.append(cb)
            return real(cb, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        events = [bus.watch(tmp_path) for _ in range(50)]
        t = threading.Thread(target=bus.notify, args=(tmp_path,))  # a delivery's worker thread
        t.start()
        t.join()
        await asyncio.sleep(0.01)
        assert len(calls) == 1
        for e in events:
            bus.unwatch(tmp_path, e)
        return [e.is_set() for e in events]

    assert asyncio.run(main()) == [True] * 50


def test_sync_views_gives_each_view_what_its_own_sync_would(store: MailStore, account: Account,
                                                            maildir: Path) -> None:
    """View Rule 12: views of two folders of one account and of another account, synced in one
    call, report what separate ``sync`` calls report; \\Recent goes to one view per folder;
    an error of a folder is given to that folder's views only."""
    other = store.account(Address("carol", "example.com"))
    account.create("Work")
    group = [account.select("INBOX") for _ in range(3)] + [account.select("Work") for _ in range(2)]
    group += [other.select("INBOX") for _ in range(2)]
    alone = [account.select("INBOX"), account.select("Work"), other.select("INBOX")]
    _drop(maildir, "1.b.host")
    account.append("Work", MSG, frozenset({"$Work"}), None)
    other.append("INBOX", MSG, frozenset(), None)
    got = sync_views(group, group[0].tick())
    assert all(isinstance(c, Changes) for c in got)
    changes = [c for c in got if isinstance(c, Changes)]
    new_uids = [[m.uid for m in c.new] for c in changes]
    assert new_uids == [[1]] * len(group)
    assert [m.flags for m in changes[3].new] == [frozenset({"$Work"})]
    recent = [v.recent for v in group]
    assert sum(recent[:3]) == 1 and sum(recent[3:5]) == 1 and sum(recent[5:]) == 1
    for view in alone:  # the views synced alone: the same messages, none \Recent any more
        c = view.sync(view.tick())
        assert [m.uid for m in c.new] == [1] and view.recent == 0
    account.delete("Work")
    again = sync_views(group, group[0].tick())
    assert all(isinstance(x, MailboxError) and x.code == "NONEXISTENT" for x in again[3:5])
    assert all(isinstance(x, Changes) and not x.new for x in again[:3] + again[5:])
