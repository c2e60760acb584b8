"""Recycled queue files (pigeon.queue.recycle) and their use by the store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import Envelope, Recipient
from pigeon.queue.recycle import FREE_PREFIX, KEEP_BLOCKS, FilePool
from pigeon.queue.record import RcptState
from pigeon.queue.store import QueueStore

BOB = Address("bob", "example.net")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QueueStore]:
    s = QueueStore(tmp_path / "queue", FakeClock())
    yield s
    s.close()


def test_give_keeps_a_small_file_and_take_renames_it(tmp_path: Path) -> None:
    pool = FilePool(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"old message")
    inode = victim.stat().st_ino
    pool.give(victim)
    assert not victim.exists() and len(pool) == 1
    [free] = os.listdir(tmp_path)
    # Kept whole: its blocks are overwritten by the next message (rule 3), not freed.
    assert free.startswith(FREE_PREFIX) and (tmp_path / free).stat().st_size == len(b"old message")
    target = tmp_path / "new"
    assert pool.take(target)
    assert target.stat().st_ino == inode
    assert not pool.take(tmp_path / "other")  # empty pool
    assert pool.reused == 1


def test_give_empties_a_large_file(tmp_path: Path) -> None:
    pool = FilePool(tmp_path)
    victim = tmp_path / "victim"
    victim.write_bytes(b"x" * (KEEP_BLOCKS + 1))
    pool.give(victim)
    [free] = os.listdir(tmp_path)
    assert (tmp_path / free).stat().st_size == 0


def test_give_past_the_limit_unlinks(tmp_path: Path) -> None:
    pool = FilePool(tmp_path, limit=1)
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"x")
        pool.give(tmp_path / name)
    assert len(pool) == 1 and len(os.listdir(tmp_path)) == 1


def test_give_of_a_missing_file_raises_like_unlink(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FilePool(tmp_path).give(tmp_path / "gone")


def test_a_pooled_file_removed_behind_our_back_is_skipped(tmp_path: Path) -> None:
    pool = FilePool(tmp_path)
    (tmp_path / "a").write_bytes(b"x")
    pool.give(tmp_path / "a")
    for name in os.listdir(tmp_path):
        os.unlink(tmp_path / name)
    assert not pool.take(tmp_path / "t")


def _queue(store: QueueStore, data: bytes) -> str:
    body = store.new_body()
    body.write(data)
    env = Envelope(None, [Recipient(BOB)])
    return asyncio.run(store.commit(body, env, [RcptState(BOB, BOB)])).id


def test_removed_files_are_reused_by_the_next_message(store: QueueStore) -> None:
    first = _queue(store, b"Subject: one\r\n\r\nfirst, longer body\r\n")
    asyncio.run(store.remove_async(first))  # type: ignore[arg-type]
    pooled = sorted(os.listdir(store.root / "tmp"))
    assert len(pooled) == 2 and all(n.startswith(FREE_PREFIX) for n in pooled)
    second = _queue(store, b"Subject: two\r\n\r\n2\r\n")
    assert os.listdir(store.root / "tmp") == []  # both the body and the record took a pooled file
    rec = store.load(second)  # type: ignore[arg-type]  # the longer old record's tail is gone
    assert rec.rcpts[0].address == BOB
    with store.open_body(rec.id) as f:
        assert f.read() == b"Subject: two\r\n\r\n2\r\n"  # nothing of the longer old content left
    store.remove(rec.id)
    assert os.listdir(store.root / "msg") == [] and os.listdir(store.root / "active") == []


def test_recovery_clears_pooled_files(store: QueueStore, tmp_path: Path) -> None:
    qid = _queue(store, b"Subject: x\r\n\r\nx\r\n")
    store.remove(qid)  # type: ignore[arg-type]
    assert os.listdir(store.root / "tmp")
    report = QueueStore(store.root, FakeClock()).recover()
    assert report.tmp_removed == 2 and os.listdir(store.root / "tmp") == []
