"""Start-up recovery (pigeon.queue.recovery) after simulated crashes at every step of a commit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.queue.record import RcptState, encode_record
from pigeon.queue.store import QueueStore
from tests.unit.queueids import fresh_queue_id

BOB = Address("bob", "example.net")
BODY = b"Subject: x\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QueueStore]:
    s = QueueStore(tmp_path / "queue", FakeClock())
    yield s
    s.close()


def commit(store: QueueStore) -> QueueId:
    body = store.new_body()
    body.write(BODY)
    env = Envelope(Address("alice", "example.org"), [Recipient(BOB)])
    return store.commit_sync(body, env, [RcptState(BOB, BOB)]).id


def ls(store: QueueStore, sub: str) -> list[str]:
    return sorted(os.listdir(store.root / sub))


def test_clean_queue_reports_what_to_schedule(store: QueueStore) -> None:
    a, b, c = commit(store), commit(store), commit(store)
    store.move(b, "deferred")
    store.move(c, "hold")
    report = store.recover()
    assert report.active == [a] and report.deferred == [b] and report.hold == [c]
    assert report.to_schedule == [a, b]
    assert report.corrupt == [] and report.orphans_removed == [] and report.tmp_removed == 0


def test_crash_while_receiving_leaves_only_tmp(store: QueueStore) -> None:
    kept = commit(store)
    body = store.new_body()
    body.write(b"half a mess")  # the process dies here: no commit, the file stays in tmp/
    (store.root / "tmp" / f"{body.id}.rec").write_bytes(b'{"version": 1')  # half-written record
    report = QueueStore(store.root, FakeClock()).recover()
    assert report.tmp_removed == 2
    assert ls(store, "tmp") == []
    assert report.to_schedule == [kept]
    body.abort()


def test_crash_after_body_rename_before_record_rename(store: QueueStore) -> None:
    """Body in msg/, record still in tmp/: never committed, no 250 given → both removed."""
    kept = commit(store)
    qid = fresh_queue_id()
    (store.root / "msg" / qid).write_bytes(BODY)
    (store.root / "tmp" / f"{qid}.rec").write_bytes(b"{}")
    report = store.recover()
    assert report.orphans_removed == [qid]
    assert ls(store, "msg") == [kept] and ls(store, "tmp") == []
    assert store.load(kept).rcpts[0].address == BOB  # nothing committed is lost


def test_unreadable_record_goes_to_corrupt_with_its_body(
    store: QueueStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = commit(store)
    bad = commit(store)
    (store.root / "active" / bad).write_bytes(b"\x00\xffnot json")
    report = store.recover()
    assert report.corrupt == [bad]
    assert report.to_schedule == [good]
    assert ls(store, "corrupt") == sorted([bad, f"{bad}.body"])
    assert ls(store, "msg") == [good]
    assert bad in caplog.text and "corrupt" in caplog.text


def test_unknown_version_goes_to_corrupt(store: QueueStore) -> None:
    qid = commit(store)
    rec = store.load(qid)
    data = encode_record(rec).replace(b'"version":1', b'"version":7')
    (store.root / "active" / qid).write_bytes(data)
    report = store.recover()
    assert report.corrupt == [qid] and report.to_schedule == []


def test_record_without_body_goes_to_corrupt(store: QueueStore) -> None:
    qid = commit(store)
    os.unlink(store.root / "msg" / qid)
    report = store.recover()
    assert report.corrupt == [qid] and ls(store, "corrupt") == [qid]


def test_foreign_names_are_moved_aside_unopened(store: QueueStore) -> None:
    (store.root / "deferred" / "notes.txt").write_text("x")
    (store.root / "msg" / "core").write_text("x")
    (store.root / "corrupt" / "notes.txt").write_text("older")
    report = store.recover()
    assert sorted(report.corrupt) == ["core", "notes.txt"]
    assert ls(store, "corrupt") == ["core", "notes.txt", "notes.txt.1"]


def test_incoming_records_are_uncommitted(store: QueueStore) -> None:
    qid = fresh_queue_id()
    (store.root / "incoming" / qid).write_bytes(b"{}")
    (store.root / "msg" / qid).write_bytes(BODY)
    report = store.recover()
    assert report.incoming_removed == [qid]
    assert ls(store, "incoming") == [] and ls(store, "msg") == []


def test_same_record_in_two_states_is_a_move_cut_short_kept_once(store: QueueStore) -> None:
    # recovery rule 6: a move (link, fsync, unlink, fsync) cut short leaves the same record twice
    qid = commit(store)
    (store.root / "deferred" / qid).write_bytes((store.root / "active" / qid).read_bytes())
    report = store.recover()
    assert report.active == [qid] and report.deferred == [] and report.corrupt == []
    assert ls(store, "deferred") == [] and ls(store, "active") == [qid]
    assert ls(store, "msg") == [qid]


def test_different_records_under_one_id_keep_the_first(store: QueueStore) -> None:
    qid = commit(store)
    other = (store.root / "active" / qid).read_bytes().replace(b"\"delay_warned\":false", b"\"delay_warned\":true")
    assert other != (store.root / "active" / qid).read_bytes()
    (store.root / "deferred" / qid).write_bytes(other)
    report = store.recover()
    assert report.active == [qid] and report.corrupt == [qid]
    assert ls(store, "msg") == [qid]  # the live copy keeps its body


def test_recovery_is_idempotent(store: QueueStore) -> None:
    commit(store)
    first = store.recover()
    second = store.recover()
    assert first.to_schedule == second.to_schedule
    assert second.corrupt == [] and second.orphans_removed == []
