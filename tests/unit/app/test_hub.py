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
from pigeon.app.hub import ChangeRelay, ServerHub, local_wake, match_results
from pigeon.app.master import WorkerSpec
from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.proto.smtp.reply import Reply
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore
from pigeon.store.changes import ChangeBus

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


IMAP_2 = WorkerSpec("imap", 2, (("imap", (6,)), ("imaps", (7,))))
IMAP_3 = WorkerSpec("imap", 3, (("imap", (6,)), ("imaps", (7,))))
WORKERS = (SMTP_WORKER, IMAP_2, IMAP_3)


def test_change_notices_go_to_imap_workers_never_back_to_their_origin(tmp_path: Path) -> None:
    """hub rules 3 and 6: one Changed per folder per turn, to the IMAP workers but the sender."""
    sent: list[tuple[str, list[int]]] = []

    def send(msg: ipc.MasterMessage, to: object) -> int:
        assert isinstance(msg, ipc.Changed) and callable(to)
        sent.append((msg.directory, [w.index for w in WORKERS if to(w)]))
        return 1

    async def go() -> list[str]:
        bus = ChangeBus()
        relay = ChangeRelay(asyncio.get_running_loop(), send)
        bus.forward = relay
        hub = ServerHub(QueueStore(tmp_path / "q", FakeClock()), lambda r: None, Recorder().complete,
                        local_wake(bus), relay)
        woken = bus.watch(Path("/mail/a"))
        hub.message(IMAP_2, ipc.Changed("/mail/a"))  # from worker 2: the server's sessions wake
        hub.message(IMAP_2, ipc.Changed("/mail/a"))  # the same turn: one notice
        await asyncio.sleep(0.01)
        assert woken.is_set()
        hub.message(SMTP_WORKER, ipc.Changed("/mail/b"))  # a delivery by an SMTP worker
        await asyncio.sleep(0.01)
        bus.notify(Path("/mail/c"))  # the server's own (a local delivery, its sessions)
        await asyncio.sleep(0.01)
        hub.message(IMAP_3, ipc.Changed("/mail/d"))
        hub.message(IMAP_2, ipc.Changed("/mail/d"))  # the same folder from two origins in one turn: both
        await asyncio.sleep(0.01)
        bus.unwatch(Path("/mail/a"), woken)
        return []

    asyncio.run(go())
    assert sent == [("/mail/a", [3]), ("/mail/b", [2, 3]), ("/mail/c", [2, 3]), ("/mail/d", [2, 3])]
