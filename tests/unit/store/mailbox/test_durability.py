"""Mailbox index durability (index Rules 2, 6, 7; issue 18): flag changes are not flushed,
APPEND/EXPUNGE/COPY are (through the group-commit engine), and a WAL tail lost in a power
loss never makes a MODSEQ or a UID repeat after the reboot.

The power loss is simulated: the index files are copied at a moment when everything was
flushed (what the disk holds), more changes are made without a flush (the tail), then the
copy is put back, as the disk would be after the crash. The boot id is injected."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pigeon.clocks import FakeClock
from pigeon.durable.flushes import PathDataSync
from pigeon.store.mailbox import MailStore
from pigeon.store.mailbox.index import INDEX_NAME, MODSEQ_RESERVE, SCHEMA_VERSION, UID_RESERVE
from tests.unit.store.mailbox.conftest import BOB, MSG

HOST = "mx.example.com"
MESSAGES = 5
TAIL_STORES = 30


class Machine:
    """One data directory, and the boot of the machine that opens it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.boot = 1

    def store(self) -> MailStore:
        return MailStore(self.root, HOST, FakeClock(1_700_000_000.0), boot=lambda: self.boot)

    @property
    def maildir(self) -> Path:
        return self.root / "example.com" / "bob"

    def disk(self) -> dict[str, bytes]:
        """What a power loss would leave of the index now (everything so far is flushed)."""
        index = self.maildir / INDEX_NAME
        return {sfx: Path(f"{index}{sfx}").read_bytes() for sfx in ("", "-wal")
                if Path(f"{index}{sfx}").exists()}

    def power_loss(self, disk: dict[str, bytes]) -> None:
        index = self.maildir / INDEX_NAME
        for sfx in ("", "-wal", "-shm"):
            Path(f"{index}{sfx}").unlink(missing_ok=True)
        for sfx, data in disk.items():
            Path(f"{index}{sfx}").write_bytes(data)


def _lose_a_tail(machine: Machine) -> tuple[list[int], list[int]]:
    """Appends (flushed), then flag changes and a delivery found by a scan (not flushed),
    then a power loss; returns the MODSEQs and UIDs the sessions were shown meanwhile."""
    store = machine.store()
    account = store.account(BOB)
    for _ in range(MESSAGES):
        account.append("INBOX", MSG, frozenset(), None)
    view = account.select("INBOX")
    uids = list(view.uids())
    disk = machine.disk()  # the last APPEND flushed the WAL: all of this is on the disk
    modseqs: list[int] = []
    for i in range(TAIL_STORES):
        changed, _ = view.store([uids[i % MESSAGES]], "add" if (i // MESSAGES) % 2 == 0 else "remove",
                                frozenset({"\\Flagged"}))
        modseqs.extend(m.modseq for m in changed)
    (machine.maildir / "new" / "1700000100.M1P1.mx:2,").write_bytes(MSG.replace(b"\r\n", b"\n"))
    delivered = view.sync()  # the scan gives it a UID; the session announces it (EXISTS)
    new_uids = [m.uid for m in delivered.new]
    assert len(modseqs) == TAIL_STORES and len(new_uids) == 1
    view.close()
    store.close()
    machine.power_loss(disk)
    return modseqs, new_uids


def test_after_a_reboot_a_lost_tail_never_makes_a_modseq_or_uid_repeat(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "mail")
    modseqs, uids = _lose_a_tail(machine)
    machine.boot = 2  # the machine came back up
    store = machine.store()
    account = store.account(BOB)
    view = account.select("INBOX")
    # Every message carries a MODSEQ above any shown before: a CONDSTORE client that saw a
    # lost flag change is told the flags again (RFC 7162 §3.1.1: MODSEQs only go up).
    assert min(m.modseq for m in view.messages()) > max(modseqs)
    assert view.highestmodseq > max(modseqs)
    # The delivered file is still in the Maildir; the scan gives it a UID never shown before.
    found = [m for m in view.messages() if m.uid > MESSAGES]
    assert len(found) == 1 and found[0].uid > max(uids)  # RFC 3501 §2.3.1.1
    assert found[0].uid <= max(uids) + UID_RESERVE + 1  # a reboot costs a bounded gap
    changed, _ = view.store([1], "add", frozenset({"$Seen-again"}))
    assert changed[0].modseq > max(modseqs)
    assert changed[0].modseq <= max(modseqs) + MODSEQ_RESERVE + 2
    uid = account.append("INBOX", MSG, frozenset(), None)[1]
    assert uid > max(uids)
    view.close()
    store.close()


def test_the_simulated_power_loss_does_lose_the_tail(tmp_path: Path) -> None:
    """The same loss without a new boot (what a stale boot id would mean): the values repeat,
    so the test above checks something real."""
    machine = Machine(tmp_path / "mail")
    modseqs, uids = _lose_a_tail(machine)
    store = machine.store()
    account = store.account(BOB)
    view = account.select("INBOX")
    assert view.highestmodseq < max(modseqs)
    changed, _ = view.store([1], "add", frozenset({"$Again"}))
    assert changed[0].modseq in modseqs
    assert [m.uid for m in view.messages() if m.uid > MESSAGES] == uids
    view.close()
    store.close()


@contextmanager
def _inbox(machine: Machine) -> Iterator[Any]:
    """Bob's INBOX in a store opened now (a process start), closed at the end of the block."""
    store = machine.store()
    view = store.account(BOB).select("INBOX")
    try:
        yield view
    finally:
        view.close()
        store.close()


def test_a_reboot_without_a_loss_only_moves_the_values_up(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "mail")
    store = machine.store()
    account = store.account(BOB)
    for _ in range(3):
        account.append("INBOX", MSG, frozenset({"\\Seen"}), None)
    store.close()
    with _inbox(machine) as view:
        before = (view.highestmodseq, view.uidnext, list(view.uids()))
    machine.boot = 2
    with _inbox(machine) as view:
        assert list(view.uids()) == before[2]  # the messages keep their UIDs
        assert view.highestmodseq > before[0] and view.uidnext >= before[1]
        assert all("\\Seen" in m.flags for m in view.messages())
    with _inbox(machine) as view:  # the same boot again: nothing moves
        again = (view.highestmodseq, view.uidnext)
    with _inbox(machine) as view:
        assert (view.highestmodseq, view.uidnext) == again


def test_flag_changes_are_not_flushed_and_appends_expunges_copies_are(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "mail")
    store = machine.store()
    account = store.account(BOB)
    core = account._core
    wal = PathDataSync(core.index.path.with_name(INDEX_NAME + "-wal"))
    group = core.group
    assert group is store._maildirs.commits  # the store's engine, shared by its accounts
    account.append("INBOX", MSG, frozenset(), None)
    view = account.select("INBOX")
    view.store([1], "add", frozenset({"\\Seen"}))  # the first non-durable write reserves
    syncs, full = group.runs_of(wal), core.index.full_commits
    for i in range(20):
        view.store([1], "add" if i % 2 else "remove", frozenset({"\\Flagged", "$Work"}))
    assert (group.runs_of(wal), core.index.full_commits) == (syncs, full)  # no flush at all
    account.append("INBOX", MSG, frozenset({"\\Deleted"}), None)
    assert group.runs_of(wal) == syncs + 1
    view.sync()
    view.copy([1], "Archive")
    assert group.runs_of(wal) == syncs + 2
    assert view.expunge() == [2]
    assert group.runs_of(wal) == syncs + 3
    assert core.index.full_commits == full  # all within the reservations
    view.close()
    store.close()


def test_an_index_of_schema_1_is_upgraded_in_place(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "mail")
    store = machine.store()
    account = store.account(BOB)
    account.append("INBOX", MSG, frozenset({"\\Seen"}), None)
    store.close()
    index = machine.maildir / INDEX_NAME
    conn = sqlite3.connect(index)
    conn.executescript("ALTER TABLE folder DROP COLUMN modseq_reserved;"
                       "ALTER TABLE folder DROP COLUMN uid_reserved;"
                       "ALTER TABLE folder DROP COLUMN listed_new;"  # schema 3's (scan Rule 1)
                       "ALTER TABLE folder DROP COLUMN listed_cur;"
                       "ALTER TABLE folder DROP COLUMN listed_at;"
                       "DELETE FROM meta WHERE key='boot'; PRAGMA user_version=1;")
    conn.close()
    store = machine.store()
    view = store.account(BOB).select("INBOX")
    assert [m.uid for m in view.messages()] == [1]
    changed, _ = view.store([1], "add", frozenset({"\\Flagged"}))
    assert changed
    view.close()
    store.close()
    conn = sqlite3.connect(index)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reserved, listed_at = conn.execute(
        "SELECT modseq_reserved, listed_at FROM folder WHERE name='INBOX'").fetchone()
    conn.close()
    assert reserved > changed[0].modseq
    assert listed_at > 0  # schema 3: the listing record (scan Rule 1), written by the first scan
    assert os.path.exists(machine.maildir / "pigeon-index.lock")


def test_a_copy_past_its_reservation_raises_it_and_is_flushed_before_the_locks_go(tmp_path: Path) -> None:
    machine = Machine(tmp_path / "mail")
    store = machine.store()
    account = store.account(BOB)
    core = account._core
    many = UID_RESERVE + 20
    for _ in range(many):
        account.append("INBOX", MSG, frozenset(), None)
    view = account.select("INBOX")
    full = core.index.full_commits
    _, mapping = view.copy(list(view.uids()), "Archive")
    assert [d for _, d in mapping] == list(range(1, many + 1))
    assert core.index.full_commits == full + 1  # the overrun's own flush (index Rule 6)
    conn = sqlite3.connect(core.index.path)
    uidnext, reserved = conn.execute("SELECT uidnext, uid_reserved FROM folder WHERE name='Archive'").fetchone()
    conn.close()
    assert uidnext == many + 1 and reserved >= uidnext
    view.close()
    store.close()
