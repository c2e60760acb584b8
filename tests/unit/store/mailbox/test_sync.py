"""Views and sync: deliveries, other sessions, other programs (mutt), threads."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.store.mailbox import Account, MailboxError, MailStore, MessageMeta
from pigeon.store.mailbox.flags import split_name
from pigeon.store.maildir import MaildirStore
from tests.unit.store.mailbox.conftest import BOB, MSG


def _deliver(tmp_path: Path, body: bytes = MSG) -> Path:
    return MaildirStore(tmp_path / "mail", "mx.example.com").deliver(BOB, b"", io.BytesIO(body))


def test_delivery_is_picked_up_by_sync(tmp_path: Path, account: Account, maildir: Path) -> None:
    box = account.select("INBOX")
    try:
        assert box.sync().empty
        delivered = _deliver(tmp_path)
        changes = box.sync()
        assert [m.uid for m in changes.new] == [1] and changes.expunged == [] and changes.changed == []
        assert os.listdir(maildir / "new") == []
        (name,) = os.listdir(maildir / "cur")
        assert name == delivered.name + ":2,"
        assert box.read(1) == MSG and box.messages()[0].size == len(MSG)
        assert box.uidnext == 2 and box.is_recent(1)
        assert box.sync().empty
    finally:
        box.close()


def test_uids_follow_arrival_order(tmp_path: Path, account: Account, maildir: Path) -> None:
    """Mail delivered while no session runs gets UIDs by mtime, then name."""
    paths = [_deliver(tmp_path, MSG + b"%d" % i) for i in range(4)]
    for when, p in zip((300, 100, 200, 100), paths):
        os.utime(p, (1_600_000_000 + when, 1_600_000_000 + when))
    box = account.select("INBOX")
    try:
        order = [box.read(m.uid)[-1:] for m in box.messages()]
        first, second = sorted([paths[1].name, paths[3].name])
        expected_ties = [b"1", b"3"] if first == paths[1].name else [b"3", b"1"]
        assert order == expected_ties + [b"2", b"0"]
        assert [m.internaldate for m in box.messages()][-1] == 1_600_000_300
    finally:
        box.close()


def test_two_views_see_each_others_changes(account: Account) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    a = account.select("INBOX")
    b = account.select("INBOX")
    try:
        a.store([2], "add", frozenset({"\\Seen", "Todo"}))
        assert a.sync().empty  # own change: already known to a
        ch = b.sync()
        assert [(m.uid, m.flags) for m in ch.changed] == [(2, frozenset({"\\Seen", "Todo"}))]
        assert b.get(2) is not None and "\\Seen" in b.get(2).flags  # type: ignore[union-attr]
        a.store([1], "add", frozenset({"\\Deleted"}))
        a.expunge()
        account.append("INBOX", MSG, frozenset({"\\Draft"}), None)
        ch = b.sync()
        assert ch.expunged == [1] and [m.uid for m in ch.new] == [4]
        assert [m.uid for m in b.messages()] == [2, 3, 4]
        assert b.highestmodseq == account.status("INBOX").highestmodseq
        assert [m.uid for m in a.sync().new] == [4]
        assert a.messages() == b.messages()
    finally:
        a.close()
        b.close()


def test_store_of_flags_another_view_already_set(account: Account) -> None:
    """view Rule 11: the STORE writes nothing, yet the view shows the flags after it (RFC 3501
    §6.4.6), says the change was someone else's, and sync does not report it again."""
    account.append("INBOX", MSG, frozenset(), None)
    a = account.select("INBOX")
    b = account.select("INBOX")
    try:
        a.store([1], "set", frozenset({"\\Seen", "\\Answered"}))
        refreshed: list[MessageMeta] = []
        changed, failed = b.store([1], "set", frozenset({"\\Seen", "\\Answered"}), None, None, refreshed)
        assert changed == [] and failed == []  # nothing written: a had set them
        assert [(m.uid, m.flags) for m in refreshed] == [(1, frozenset({"\\Seen", "\\Answered"}))]
        assert b.flags_of(1) == frozenset({"\\Seen", "\\Answered"})
        assert b.sync().empty  # reported by the STORE's caller, not twice
        assert b.messages() == a.messages()
    finally:
        a.close()
        b.close()


def test_store_over_another_views_change(account: Account) -> None:
    """view Rule 11: +FLAGS on a message another view changed meanwhile: the result has both
    changes and is reported as taken in; sync stays quiet; a refused UNCHANGEDSINCE is left
    for sync to report."""
    for _ in range(2):
        account.append("INBOX", MSG, frozenset(), None)
    a = account.select("INBOX")
    b = account.select("INBOX")
    try:
        a.store([1, 2], "add", frozenset({"\\Answered"}))
        refreshed: list[MessageMeta] = []
        changed, _ = b.store([1], "add", frozenset({"\\Seen"}), None, None, refreshed)
        assert [m.flags for m in changed] == [frozenset({"\\Seen", "\\Answered"})]
        assert [m.uid for m in refreshed] == [1]
        refreshed.clear()
        changed, failed = b.store([2], "add", frozenset({"\\Seen"}), b.highestmodseq, None, refreshed)
        assert changed == [] and failed == [2] and refreshed == []
        assert b.flags_of(2) == frozenset()  # still as b last synced; sync tells it
        ch = b.sync()
        assert [(m.uid, m.flags) for m in ch.changed] == [(2, frozenset({"\\Answered"}))]
    finally:
        a.close()
        b.close()


def test_external_flag_change_and_delete(account: Account, maildir: Path) -> None:
    """mutt renames cur/ files to change flags and unlinks them to delete."""
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        names = sorted(os.listdir(maildir / "cur"), key=lambda n: box_uid(box, maildir, n))
        os.rename(maildir / "cur" / names[0], maildir / "cur" / (names[0] + "FS"))
        os.unlink(maildir / "cur" / names[1])
        ch = box.sync()
        assert [(m.uid, m.flags) for m in ch.changed] == [(1, frozenset({"\\Flagged", "\\Seen"}))]
        assert ch.expunged == [2] and ch.new == []
        assert box.expunged_since(0) == [2]
        # Our own STORE still works on the renamed file.
        changed, _ = box.store([1], "remove", frozenset({"\\Flagged"}))
        assert split_name(changed[0].path.name)[1] == "S" and changed[0].path.exists()
    finally:
        box.close()


def box_uid(box: object, maildir: Path, name: str) -> int:
    from pigeon.store.mailbox import Mailbox
    assert isinstance(box, Mailbox)
    for m in box.messages():
        if m.path.name == name:
            return m.uid
    raise AssertionError(name)


def test_stale_path_is_re_resolved_by_base_name(account: Account, maildir: Path) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    a = account.select("INBOX")
    b = account.select("INBOX")
    try:
        stale = b.messages()[0].path
        a.store([1], "add", frozenset({"\\Seen"}))
        assert not stale.exists()
        assert b.read(1) == MSG  # b has not synced: its path is stale
        (name,) = os.listdir(maildir / "cur")
        os.rename(maildir / "cur" / name, maildir / "cur" / (name + "R"))  # behind everyone's back
        assert a.read_header(1).startswith(b"From:")
        changed, _ = b.store([1], "add", frozenset({"\\Flagged"}))
        assert split_name(changed[0].path.name)[1] == "FRS"
    finally:
        a.close()
        b.close()


def test_message_moved_by_mutt_from_new_to_cur(tmp_path: Path, account: Account,
                                                maildir: Path) -> None:
    delivered = _deliver(tmp_path)
    os.rename(delivered, maildir / "cur" / (delivered.name + ":2,S"))
    box = account.select("INBOX")
    try:
        (m,) = box.messages()
        assert m.flags == frozenset({"\\Seen"}) and box.read(m.uid) == MSG
    finally:
        box.close()


def test_read_of_message_expunged_elsewhere(account: Account) -> None:
    account.append("INBOX", MSG, frozenset({"\\Deleted"}), None)
    a = account.select("INBOX")
    b = account.select("INBOX")
    try:
        a.expunge()
        with pytest.raises(MailboxError) as err:
            b.read(1)
        assert err.value.code == "EXPUNGEISSUED"
        assert b.sync().expunged == [1]
    finally:
        a.close()
        b.close()


def test_view_of_deleted_folder(account: Account) -> None:
    account.create("Gone")
    box = account.select("Gone")
    try:
        account.delete("Gone")
        with pytest.raises(MailboxError) as err:
            box.sync()
        assert err.value.code == "NONEXISTENT"
    finally:
        box.close()


def test_index_rebuilt_after_deletion_gets_new_uidvalidity(tmp_path: Path, account: Account,
                                                           maildir: Path, clock: object) -> None:
    account.append("INBOX", MSG, frozenset({"\\Seen"}), None)
    uv = account.status("INBOX").uidvalidity
    account.close()
    for suffix in ("", "-wal", "-shm"):
        p = maildir / ("pigeon-index.sqlite3" + suffix)
        if p.exists():
            p.unlink()
    account._core.clock.advance(5)  # type: ignore[attr-defined]
    st = account.status("INBOX")
    assert st.messages == 1 and st.unseen == 0 and st.uidvalidity > uv


def test_concurrent_threads(account: Account) -> None:
    """Appends, stores and syncs from several threads: no lost or duplicated UID."""
    boxes = [account.select("INBOX") for _ in range(3)]
    errors: list[BaseException] = []

    def appender() -> None:
        try:
            for _ in range(15):
                account.append("INBOX", MSG, frozenset(), None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def flagger(box: object) -> None:
        from pigeon.store.mailbox import Mailbox
        assert isinstance(box, Mailbox)
        try:
            for _ in range(30):
                box.sync()
                uids = [m.uid for m in box.messages()]
                if uids:
                    box.store(uids[-3:], "add", frozenset({"\\Seen"}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=appender) for _ in range(2)]
    threads += [threading.Thread(target=flagger, args=(b,)) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        for b in boxes:
            b.sync()
            assert [m.uid for m in b.messages()] == list(range(1, 31))
        assert [m.flags for m in boxes[0].messages()] == [m.flags for m in boxes[1].messages()]
    finally:
        for b in boxes:
            b.close()


def test_read_follows_renames_by_another_process(tmp_path: Path, clock: FakeClock, account: Account,
                                                 maildir: Path) -> None:
    """view Rule 10: another process (its own MailStore, its own lock) changes the flags, so the
    file is renamed after this view last looked; FETCH must still read it, never fail."""
    account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    other = MailStore(tmp_path / "mail", "mx.example.com", clock)
    try:
        theirs = other.account(BOB).select("INBOX")
        for flags in ({"\\Seen"}, {"\\Flagged"}, {"\\Answered"}):
            theirs.store([1], "set", frozenset(flags))
            assert box.read(1) == MSG and box.read_header(1).endswith(b"\r\n\r\n")
        # a tool moved it back to new/ without flags (a crash-recovery case): found there too
        (path,) = (maildir / "cur").iterdir()
        os.rename(path, maildir / "new" / path.name.split(":")[0])
        assert box.read(1) == MSG
        theirs.close()
    finally:
        box.close()
        other.close()


def test_read_of_message_expunged_by_another_process(tmp_path: Path, clock: FakeClock,
                                                     account: Account) -> None:
    """RFC 2180 §4.1: a message expunged in another process is EXPUNGEISSUED, not an error."""
    account.append("INBOX", MSG, frozenset({"\\Deleted"}), None)
    box = account.select("INBOX")
    other = MailStore(tmp_path / "mail", "mx.example.com", clock)
    try:
        theirs = other.account(BOB).select("INBOX")
        theirs.expunge()
        theirs.close()
        with pytest.raises(MailboxError) as err:
            box.read(1)
        assert err.value.code == "EXPUNGEISSUED"
    finally:
        box.close()
        other.close()


def test_own_changes_do_not_relist_cur_but_a_program_is_seen_within_dirty_relist(
        account: Account, maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """context Rule 8: STOREs, EXPUNGEs and APPENDs of this process do not make the next scan list
    ``cur/`` again; another program's rename hidden in the same mtime tick is seen once the
    last listing is ``DIRTY_RELIST`` old (Rule 1's bound)."""
    import time

    from pigeon.store.mailbox import scan

    for _ in range(5):
        account.append("INBOX", MSG, frozenset(), None)
    box, other = account.select("INBOX"), account.select("INBOX")
    listings: list[Path] = []
    real = scan._list_cur
    monkeypatch.setattr(scan, "_list_cur", lambda d: listings.append(d) or real(d))
    try:
        time.sleep(scan.DIRTY_RELIST)
        other.sync()  # one listing: the memo is fresh
        assert len(listings) == 1
        for uid in (1, 2, 3):
            other.store([uid], "add", frozenset({"\\Seen"}))
            assert [m.uid for m in box.sync().changed] == [uid]  # the index says it: no listing
        other.store([4], "add", frozenset({"\\Deleted"}))
        assert other.expunge() == [4]
        account.append("INBOX", MSG, frozenset(), None)
        ch = box.sync()
        assert ch.expunged == [4] and [m.uid for m in ch.new] == [6]
        assert len(listings) == 1
        # A program renames a file in the same mtime tick as our last change: hidden at first...
        cur = maildir / "cur"
        mtime = os.stat(cur).st_mtime_ns
        name = next(n for n in os.listdir(cur) if box.get(5) is not None and n.startswith(box.get(5).path.name.split(":")[0]))
        os.rename(cur / name, cur / (name + "F"))
        os.utime(cur, ns=(mtime, mtime))
        assert box.sync().changed == []
        time.sleep(scan.DIRTY_RELIST)  # ...and seen once the last listing is DIRTY_RELIST old
        assert [(m.uid, m.flags) for m in box.sync().changed] == [(5, frozenset({"\\Flagged"}))]
        assert len(listings) == 2
    finally:
        box.close()
        other.close()
