"""The mailbox store on a really full file system (a small tmpfs): a user can still open the
mailbox, read, mark mail \\Deleted and expunge it, which frees the space; APPEND and keyword
STOREs are refused with OVERQUOTA, and a COPY or MOVE that fails leaves its files where they
were; once there is room the index catches up with the Maildir.
(pigeon.store.mailbox.index Rule 5, scan Rule 6, ops Rule 6, view Rule 9.)
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.core.address import Address
from pigeon.clocks import FakeClock
from pigeon.store.mailbox import MailboxError, MailStore, disk_full
from tests.fulldisk import fill, free_bytes, small_fs

BOB = Address("bob", "example.com")
HOST = "mx.example.com"
COUNT = 40  # above ops.BULK_ROWS: EXPUNGE takes its one-listing path
BODY = b"x" * 40_000  # each message frees about 40 KB when expunged


def message(i: int) -> bytes:
    return b"From: a@example.org\r\nSubject: m%d\r\n\r\n" % i + BODY + b"\r\n"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_fs(tmp_path / "fs", "8m") as root:
        yield root


def mailstore(root: Path) -> MailStore:
    return MailStore(root / "mail", HOST, FakeClock(1_700_000_000.0))


def filled_mailbox(root: Path) -> Path:
    """A mailbox of COUNT messages (indexed, then the store closed: WAL and shm are gone, as
    after a restart), on a file system then filled to the last byte; returns the filler."""
    store = mailstore(root)
    acc = store.account(BOB)
    for i in range(COUNT):
        acc.append("INBOX", message(i), frozenset(), None)
    store.close()
    return fill(root)


def cur_files(root: Path) -> list[str]:
    return os.listdir(root / "mail" / "example.com" / "bob" / "cur")


def test_select_fetch_store_deleted_and_expunge_work_on_a_full_disk_and_free_it(disk: Path) -> None:
    filler = filled_mailbox(disk)
    store = mailstore(disk)  # a fresh start: the index must open without room for its shm
    try:
        box = store.account(BOB).select("INBOX")
        uids = list(box.uids())
        assert len(uids) == COUNT
        assert box.read(uids[0]).startswith(b"From: a@example.org\r\nSubject: m0\r\n")
        box.cache_put(uids[0], "test", b"v" * 5000)  # a cache entry is simply not kept
        changed, failed = box.store(uids[:10], "add", frozenset({"\\Deleted"}))
        assert [m.uid for m in changed] == uids[:10] and failed == []
        assert all("\\Deleted" in m.flags for m in changed)
        before = free_bytes(disk)
        assert box.expunge() == uids[:10]
        assert free_bytes(disk) >= before + 8 * len(BODY)  # deleting freed the space (less a few WAL pages)
        assert [m.uid for m in box.messages()] == uids[10:]
        assert len(cur_files(disk)) == COUNT - 10
        box.close()
    finally:
        store.close()
    filler.unlink()
    store = mailstore(disk)  # room again: the index catches up with the Maildir
    try:
        box = store.account(BOB).select("INBOX")
        assert list(box.uids()) == uids[10:]
        assert not any("\\Deleted" in m.flags for m in box.messages())
        box.close()
    finally:
        store.close()


def test_append_and_keyword_store_on_a_full_disk_are_overquota_and_leave_nothing(disk: Path) -> None:
    filled_mailbox(disk)
    store = mailstore(disk)
    try:
        acc = store.account(BOB)
        before = sorted(cur_files(disk))
        with pytest.raises(MailboxError) as err:
            acc.append("INBOX", message(99), frozenset({"\\Seen"}), None)
        assert err.value.code == "OVERQUOTA"
        assert sorted(cur_files(disk)) == before
        assert os.listdir(disk / "mail" / "example.com" / "bob" / "tmp") == []
        box = acc.select("INBOX")
        with pytest.raises(MailboxError) as err:
            box.store(list(box.uids())[:1], "add", frozenset({"$Label1"}))
        assert err.value.code == "OVERQUOTA"
        trash = disk / "mail" / "example.com" / "bob" / ".Trash" / "cur"
        for transfer in (box.copy, box.move):  # the IMAP session answers these NO [OVERQUOTA]
            with pytest.raises(sqlite3.Error) as failed:
                transfer(list(box.uids())[:3], "Trash")
            assert disk_full(failed.value)
            assert sorted(cur_files(disk)) == before and os.listdir(trash) == []  # put back
        box.close()
    finally:
        store.close()


def test_flags_stored_on_a_full_disk_reach_the_index_once_there_is_room(disk: Path) -> None:
    filler = filled_mailbox(disk)
    store = mailstore(disk)
    try:
        box = store.account(BOB).select("INBOX")
        uid = box.uids()[3]
        (changed,), _ = box.store([uid], "add", frozenset({"\\Seen", "\\Flagged"}))
        assert changed.flags == frozenset({"\\Seen", "\\Flagged"})
        box.close()
    finally:
        store.close()
    filler.unlink()
    store = mailstore(disk)
    try:
        box = store.account(BOB).select("INBOX")
        meta = box.get(uid)
        assert meta is not None and meta.flags == frozenset({"\\Seen", "\\Flagged"})
        box.close()
    finally:
        store.close()
