"""The durable queue on real files (pigeon.queue.store): commit, load, update, move, remove, scan."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.core.results import TemporaryError
from pigeon.proto.smtp.reply import C452_INSUFFICIENT_STORAGE
from pigeon.durable.testing import FaultyIO
from pigeon.queue.record import RECORD_VERSION, Attempt, CorruptRecord, RcptState
from pigeon.queue.body import BODY_BUFFER
from pigeon.queue.store import QueueStore, QueueWriteError, RecordNotFound

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
CAROL = Address("carol", "example.net")
BODY = b"Subject: hi\r\n\r\nHello\r\n"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[QueueStore]:
    s = QueueStore(tmp_path / "queue", clock)
    yield s
    s.close()


def envelope(*rcpts: Address) -> Envelope:
    return Envelope(
        sender=ALICE,
        recipients=[Recipient(r, ("FAILURE",), f"rfc822;{r}") for r in rcpts],
        body="8BITMIME",
        client=ClientInfo("192.0.2.1", "mx.example.org", "ESMTPS", None, "TLSv1.3 TLS_AES_128_GCM_SHA256"),
    )


def states(*rcpts: Address) -> list[RcptState]:
    return [RcptState(r, r, ("FAILURE",), f"rfc822;{r}") for r in rcpts]


def queue_sync(store: QueueStore, data: bytes = BODY, *rcpts: Address) -> QueueId:
    rcpts = rcpts or (BOB,)
    body = store.new_body()
    body.write(data)
    return store.commit_sync(body, envelope(*rcpts), states(*rcpts)).id


def files(root: Path, sub: str) -> list[str]:
    return sorted(os.listdir(root / sub))


def test_layout_is_created(store: QueueStore) -> None:
    for sub in ("tmp", "msg", "incoming", "active", "deferred", "hold", "corrupt"):
        assert (store.root / sub).is_dir()


def test_body_streams_to_tmp_until_commit(store: QueueStore) -> None:
    body = store.new_body()
    assert is_queue_id(body.id)
    body.write(b"Subject: a\r\n")
    body.write(b"\r\nbody\r\n")
    assert body.size == len(b"Subject: a\r\n\r\nbody\r\n")
    assert files(store.root, "tmp") == [body.id]
    assert files(store.root, "msg") == []
    body.abort()
    body.abort()  # twice is fine
    assert files(store.root, "tmp") == []


def test_commit_sync_is_durable_for_a_fresh_store(store: QueueStore, tmp_path: Path, clock: FakeClock) -> None:
    qid = queue_sync(store, BODY, BOB, CAROL)
    assert files(store.root, "active") == [qid]
    assert files(store.root, "tmp") == []
    again = QueueStore(tmp_path / "queue", clock)
    rec = again.load(qid)
    assert rec.state == "active"
    assert rec.envelope.sender == ALICE
    assert rec.envelope.client.tls == "TLSv1.3 TLS_AES_128_GCM_SHA256"
    assert [r.address for r in rec.rcpts] == [BOB, CAROL]
    assert rec.rcpts[0].orcpt == f"rfc822;{BOB}" and rec.rcpts[0].notify == ("FAILURE",)
    assert rec.size == len(BODY) and rec.created == clock.now()
    with again.open_body(qid) as f:
        assert f.read() == BODY
    assert again.body_path(qid).read_bytes() == BODY
    doc = json.loads((store.root / "active" / qid).read_bytes())
    assert doc["version"] == RECORD_VERSION and doc["id"] == qid


def test_async_commit_is_durable(store: QueueStore, tmp_path: Path, clock: FakeClock) -> None:
    async def go() -> QueueId:
        body = store.new_body()
        body.write(BODY)
        rec = await store.commit(body, envelope(BOB), states(BOB))
        # The commit point: the record is in active/ when commit returns.
        assert (store.root / "active" / rec.id).exists()
        return rec.id

    qid = asyncio.run(go())
    fresh = QueueStore(tmp_path / "queue", clock)
    assert fresh.load(qid).rcpts[0].address == BOB
    assert fresh.body_path(qid).read_bytes() == BODY


def test_record_round_trips_attempts_and_flags(store: QueueStore) -> None:
    qid = queue_sync(store)
    rec = store.load(qid)
    rec.rcpts[0].status = "deferred"
    rec.rcpts[0].attempts.append(Attempt(1.5, "mx.example.net[192.0.2.9]:25", "451 4.3.0 try later"))
    rec.rcpts[0].next_try = 99.0
    rec.rcpts[0].last_reply = "451 4.3.0 try later"
    rec.delay_warned = True
    store.update_sync(rec)
    back = store.load(qid)
    assert back == rec
    assert back.pending() == back.rcpts and not back.done
    back.rcpts[0].status = "delivered"
    assert back.pending() == [] and back.done


def test_async_update_rewrites_in_place(store: QueueStore) -> None:
    qid = queue_sync(store, BODY, BOB, CAROL)

    async def go() -> None:
        rec = store.load(qid)
        rec.rcpts[1].status = "failed"
        await store.update(rec)

    asyncio.run(go())
    assert [r.status for r in store.load(qid).rcpts] == ["pending", "failed"]
    assert files(store.root, "tmp") == []


def test_update_of_a_removed_record_is_refused(store: QueueStore) -> None:
    qid = queue_sync(store)
    rec = store.load(qid)
    store.remove(qid)
    with pytest.raises(RecordNotFound):
        store.update_sync(rec)
    assert files(store.root, "active") == []


def test_move_hold_release(store: QueueStore) -> None:
    qid = queue_sync(store)
    held = store.move(qid, "hold")
    assert held.state == "hold" and store.state_of(qid) == "hold"
    assert files(store.root, "active") == [] and files(store.root, "hold") == [qid]
    assert list(store.scan(("active", "deferred"))) == []
    released = store.move(qid, "active")
    assert released.state == "active" and store.load(qid).state == "active"
    assert store.move(qid, "active").state == "active"  # a no-op move
    with pytest.raises(ValueError):
        store.move(qid, "corrupt")


def test_move_async(store: QueueStore) -> None:
    qid = queue_sync(store)

    async def go() -> None:
        rec = await store.move_async(qid, "deferred")
        assert rec.state == "deferred"

    asyncio.run(go())
    assert store.load(qid).state == "deferred"


def test_remove_record_then_body(store: QueueStore) -> None:
    qid = queue_sync(store)
    store.remove(qid)
    assert files(store.root, "active") == [] and files(store.root, "msg") == []
    with pytest.raises(RecordNotFound):
        store.load(qid)
    with pytest.raises(FileNotFoundError):  # callers racing with a removal may catch this
        store.remove(qid)


def test_remove_async(store: QueueStore) -> None:
    qid = queue_sync(store)
    asyncio.run(store.remove_async(qid))
    assert files(store.root, "active") == [] and files(store.root, "msg") == []


def test_scan_skips_foreign_and_unreadable(store: QueueStore, caplog: pytest.LogCaptureFixture) -> None:
    a = queue_sync(store)
    b = queue_sync(store)
    store.move(b, "deferred")
    c = queue_sync(store)
    (store.root / "active" / c).write_bytes(b"{not json")
    (store.root / "active" / "README").write_text("hello")
    got = {(r.id, r.state) for r in store.scan()}
    assert got == {(a, "active"), (b, "deferred")}
    assert "README" in caplog.text and c in caplog.text
    with pytest.raises(ValueError):
        list(store.scan(("nowhere",)))  # type: ignore[arg-type]


def test_load_refuses_non_queue_ids(store: QueueStore) -> None:
    with pytest.raises(ValueError):
        store.load(QueueId("../../etc/passwd"))
    with pytest.raises(ValueError):
        store.body_path(QueueId("a/b"))


def test_unknown_version_is_corrupt(store: QueueStore) -> None:
    qid = queue_sync(store)
    path = store.root / "active" / qid
    doc = json.loads(path.read_bytes())
    doc["version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(CorruptRecord, match="version"):
        store.load(qid)


def assert_nothing_queued(store: QueueStore) -> None:
    for sub in ("tmp", "msg", "active", "deferred", "hold", "incoming"):
        assert files(store.root, sub) == [], sub


@pytest.fixture
def faulty(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[QueueStore, FaultyIO]]:
    """A store whose system calls go through a FaultyIO (the IO seam, pigeon.durable.io)."""
    fio = FaultyIO()
    s = QueueStore(tmp_path / "queue", clock, io=fio)
    yield s, fio
    s.close()


def test_enospc_in_commit_sync_leaves_nothing(faulty: tuple[QueueStore, FaultyIO]) -> None:
    store, fio = faulty
    fio.fail("fsync", error=errno.ENOSPC, times=None)
    body = store.new_body()
    body.write(BODY)
    with pytest.raises(QueueWriteError) as info:
        store.commit_sync(body, envelope(BOB), states(BOB))
    assert info.value.reply == C452_INSUFFICIENT_STORAGE
    assert isinstance(info.value, TemporaryError)
    assert_nothing_queued(store)


def test_enospc_in_async_commit_leaves_nothing(faulty: tuple[QueueStore, FaultyIO]) -> None:
    store, fio = faulty
    fio.fail("fsync", nth=2, error=errno.ENOSPC)  # the record's fsync fails, the body's does not

    async def go() -> None:
        body = store.new_body()
        body.write(BODY)
        with pytest.raises(QueueWriteError) as info:
            await store.commit(body, envelope(BOB), states(BOB))
        assert info.value.reply.code == 452

    asyncio.run(go())
    assert fio.calls["fsync"] == 2
    assert_nothing_queued(store)


def test_directory_fsync_failure_after_rename_removes_the_record(faulty: tuple[QueueStore, FaultyIO]) -> None:
    """The record was already renamed into active/ when active/'s fsync failed: no 250 was
    given, so the record must go (nothing half-queued)."""
    store, fio = faulty
    fio.fail("fsync_dir", match="active", error=errno.EIO)

    async def go() -> None:
        body = store.new_body()
        body.write(BODY)
        with pytest.raises(QueueWriteError):
            await store.commit(body, envelope(BOB), states(BOB))

    asyncio.run(go())
    assert_nothing_queued(store)


def test_write_error_while_streaming(faulty: tuple[QueueStore, FaultyIO]) -> None:
    store, fio = faulty
    body = store.new_body()
    fio.fail("write", error=errno.ENOSPC)
    with pytest.raises(QueueWriteError):
        body.write(b"x" * (BODY_BUFFER + 1))  # a full buffer goes to the file at once
    body.abort()
    assert_nothing_queued(store)
