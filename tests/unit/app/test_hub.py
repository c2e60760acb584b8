"""app.hub: what the server does with a worker's messages (rules 1–3) and with what a worker
leaves when it ends (rule 4). A message is always read from the queue, never from the pipe;
a queue id that is not queued, or results that do not match the message's recipients, are
logged and never recorded."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pigeon.app import ipc
from pigeon.app.hub import ServerHub, match_results
from pigeon.app.master import WorkerSpec
from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.proto.smtp.reply import Reply
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
CAROL = Address("carol", "example.net")
SMTP_WORKER = WorkerSpec("smtp", 1, (("smtp", (5,)),))


class Recorder:
    def __init__(self) -> None:
        self.scheduled: list[str] = []
        self.completed: list[tuple[str, list[tuple[str, str, int]]]] = []
        self.changed: list[Path] = []

    def schedule(self, record: QueueRecord) -> None:
        self.scheduled.append(record.id)

    async def complete(self, record: QueueRecord, results: list[tuple[RcptState, RecipientResult]]) -> None:
        self.completed.append((record.id, [(str(r.address), res.status, res.reply.code) for r, res in results]))

    def notify(self, directory: Path) -> None:
        self.changed.append(directory)


def queued(store: QueueStore, *rcpts: Address) -> QueueId:
    body = store.new_body()
    body.write(b"Subject: x\r\n\r\nbody\r\n")
    env = Envelope(sender=ALICE, recipients=[Recipient(r, (), None) for r in rcpts], body="7BIT",
                   client=ClientInfo("192.0.2.1", "h", "ESMTP", None, None))
    return store.commit_sync(body, env, [RcptState(r, r) for r in rcpts]).id


def result(rcpt: Address, status: str = "failed", code: int = 550) -> RecipientResult:
    return RecipientResult(rcpt, status, Reply(code, f"{code // 100}.1.1", "no such user"), "local")  # type: ignore[arg-type]


def run(tmp_path: Path, messages: list[ipc.Notice], rcpts: tuple[Address, ...] = (BOB,)) -> tuple[Recorder, QueueId]:
    store = QueueStore(tmp_path / "queue", FakeClock())
    qid = queued(store, *rcpts)
    rec = Recorder()
    hub = ServerHub(store, rec.schedule, rec.complete, rec)

    async def go() -> None:
        for msg in messages:
            hub.message(SMTP_WORKER, msg)
        await hub.close()

    try:
        asyncio.run(go())
    finally:
        store.close()
    return rec, qid


def test_schedule_complete_and_changed_are_acted_on(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "queue", FakeClock())
    qid = queued(store, BOB)
    store.close()
    rec, _ = run(tmp_path, [ipc.Schedule(qid), ipc.Complete(qid, (result(BOB),)), ipc.Changed("/var/mail/x")])
    assert rec.scheduled == [qid]
    assert rec.completed == [(qid, [(str(BOB), "failed", 550)])]
    assert rec.changed == [Path("/var/mail/x")]


def test_a_queue_id_that_is_not_queued_is_logged_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    other = QueueId("0123456789ABCDEF")
    rec, _ = run(tmp_path, [ipc.Schedule(other), ipc.Complete(other, (result(BOB),))])
    assert rec.scheduled == [] and rec.completed == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and all(m.startswith("smtp worker 1: ") and other in m for m in errors)


@pytest.mark.parametrize("results", [
    (result(Address("mallory", "example.com")),),  # not a recipient
    (result(BOB), result(BOB)),  # a recipient twice
    (result(BOB),),  # fewer results than recipients (two recipients below)
    (result(BOB), result(CAROL), result(ALICE)),  # more
], ids=["stranger", "twice", "fewer", "more"])
def test_results_that_do_not_match_deliver_the_message_again(tmp_path: Path, results: tuple[RecipientResult, ...],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Results that cannot be trusted are not recorded; the queue manager attempts the
    message itself (at least once, never lost)."""
    store = QueueStore(tmp_path / "queue", FakeClock())
    qid = queued(store, BOB, CAROL)
    store.close()
    rec, _ = run(tmp_path, [ipc.Complete(qid, results)])
    assert rec.completed == []
    assert rec.scheduled == [qid]
    assert any("do not match its recipients" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_results_match_whatever_their_order_and_case(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "queue", FakeClock())
    try:
        record = store.load(queued(store, BOB, CAROL))
    finally:
        store.close()
    matched = match_results(record, (result(Address("CAROL", "example.net")), result(BOB, "delivered", 250)))
    assert matched is not None
    assert [(str(r.address), res.status) for r, res in matched] == [(str(CAROL), "failed"), (str(BOB), "delivered")]


class FakeQueue:
    """Only what ``ServerHub.ended`` uses of the queue: ``drain_journal`` and ``load``."""

    def __init__(self, records: dict[str, QueueRecord], fail: Exception | None = None) -> None:
        self.records = records
        self.fail = fail
        self.drained: list[str] = []

    def drain_journal(self, owner: str) -> list[QueueId]:
        self.drained.append(owner)
        if self.fail is not None:
            raise self.fail
        return [QueueId(q) for q in self.records]

    def load(self, qid: QueueId) -> QueueRecord:
        return self.records[qid]


def test_a_worker_that_ended_has_its_journal_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rule 4: what worker 1's journal (w1) holds is moved into the queue files and scheduled."""
    caplog.set_level(logging.INFO)
    store = QueueStore(tmp_path / "queue", FakeClock())
    try:
        record = store.load(queued(store, BOB))
    finally:
        store.close()
    queue = FakeQueue({record.id: record})
    rec = Recorder()
    hub = ServerHub(queue, rec.schedule, rec.complete, rec)  # type: ignore[arg-type]
    asyncio.run(hub.ended(SMTP_WORKER))
    assert queue.drained == ["w1"] and rec.scheduled == [record.id]
    assert "smtp worker 1: 1 messages taken over from its journal" in caplog.text
    asyncio.run(hub.ended(WorkerSpec("imap", 2, (("imap", (7,)),))))  # accepts no mail: no journal
    assert queue.drained == ["w1"]


def test_a_journal_that_cannot_be_drained_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    queue = FakeQueue({}, fail=OSError(28, "No space left on device"))
    rec = Recorder()
    hub = ServerHub(queue, rec.schedule, rec.complete, rec)  # type: ignore[arg-type]
    asyncio.run(hub.ended(SMTP_WORKER))  # never raises: the worker is restarted all the same
    assert rec.scheduled == []
    assert "smtp worker 1: draining its journal failed" in caplog.text
