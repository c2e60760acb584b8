"""The server's side of an SMTP worker's pipe (smtpd.workers rule 2): what a worker says is
checked before anything is done with it; nonsense is logged and skipped, never a crash, and a
message is always read from the queue, never from the pipe."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import RecipientResult
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore
from pigeon.smtpd.workers import SmtpWorkers

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")


class FakeProc:
    """Only what ``SmtpWorkers._read`` uses of a subprocess: its standard output."""

    def __init__(self, lines: list[bytes]) -> None:
        self.stdout = asyncio.StreamReader(limit=1024)
        for line in lines:
            self.stdout.feed_data(line)
        self.stdout.feed_eof()


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


def queued(store: QueueStore) -> str:
    body = store.new_body()
    body.write(b"Subject: x\r\n\r\nbody\r\n")
    env = Envelope(sender=ALICE, recipients=[Recipient(BOB, (), None)], body="7BIT",
                   client=ClientInfo("192.0.2.1", "h", "ESMTP", None, None))
    return store.commit_sync(body, env, [RcptState(BOB, BOB)]).id


def feed(tmp_path: Path, lines: list[bytes]) -> tuple[Recorder, bool]:
    store = QueueStore(tmp_path / "queue", FakeClock())
    rec = Recorder()
    workers = SmtpWorkers(2, None, store, rec.schedule, rec.complete, rec)

    async def go() -> bool:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await workers._read(1, FakeProc(lines), ready)  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the complete task
        return ready.done()

    try:
        return rec, asyncio.run(go())
    finally:
        store.close()


def line(**msg: object) -> bytes:
    return json.dumps(msg).encode() + b"\n"


def test_good_lines_are_acted_on(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "queue", FakeClock())
    qid = queued(store)
    store.close()
    rec, ready = feed(tmp_path, [
        line(op="ready", pid=1),
        line(op="schedule", id=qid),
        line(op="complete", id=qid, results=[[str(BOB), "failed", 550, "5.1.1", ["no such user"], "local"]]),
        line(op="changed", dir="/var/mail/x"),
    ])
    assert ready
    assert rec.scheduled == [qid]
    assert rec.completed == [(qid, [(str(BOB), "failed", 550)])]
    assert rec.changed == [Path("/var/mail/x")]


@pytest.mark.parametrize("bad", [
    b"not json\n",
    b"[1, 2]\n",
    line(op="launch-missiles"),
    line(op="schedule"),  # no id
    line(op="schedule", id="../../etc/passwd"),  # never a path
    line(op="schedule", id="0123456789ABCDEF"),  # a queue id that is not queued
    line(op="changed", dir=5),
    b"x" * 5000 + b"\n",  # over the pipe's line limit
])
def test_bad_lines_are_skipped(tmp_path: Path, bad: bytes, caplog: pytest.LogCaptureFixture) -> None:
    store = QueueStore(tmp_path / "queue", FakeClock())
    qid = queued(store)
    store.close()
    rec, _ = feed(tmp_path, [bad, line(op="schedule", id=qid)])
    assert rec.scheduled == [qid]  # the next good line still works
    assert rec.completed == [] and rec.changed == []
    assert any("smtp worker 1" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


@pytest.mark.parametrize("results", [
    "nope",
    [["bob@example.net", "delivered"]],  # too short
    [["bob@example.net", "exploded", 250, "2.0.0", ["ok"], "local"]],  # unknown status
    [["mallory@example.com", "delivered", 250, "2.0.0", ["ok"], "local"]],  # not a recipient
    [],  # fewer results than recipients
])
def test_unreadable_results_deliver_the_message_again(tmp_path: Path, results: object) -> None:
    """Results that cannot be trusted are not recorded; the queue manager attempts the
    message itself (at least once, never lost)."""
    store = QueueStore(tmp_path / "queue", FakeClock())
    qid = queued(store)
    store.close()
    rec, _ = feed(tmp_path, [line(op="complete", id=qid, results=results)])
    assert rec.completed == []
    assert rec.scheduled == [qid]
