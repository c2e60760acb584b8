"""The queue commands behind ``pigeon queue`` (pigeon.control.queueops) on a real file-system
queue: messages in the state directories and in an intake journal, with the server stopped
(rule 3: the journals are settled first) and running (rule 2: the fast road's own messages)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pigeon.clocks import FakeClock
from pigeon.control import queueops
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryJob
from pigeon.proto.smtp.reply import Reply
from pigeon.qmgr.lane import JournalLane, MessageBusy
from pigeon.queue.body import QueueWriteError
from pigeon.queue.record import QueueRecord, RcptState, State
from pigeon.queue.store import FileQueueStore

T = TypeVar("T")
ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
BODY = b"From: alice@example.org\r\nSubject: queued\r\n\r\nHello.\r\n"
R250 = Reply(250, "2.0.0", "ok")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(factory(), 10.0)
    return asyncio.run(main())


def envelope() -> Envelope:
    return Envelope(sender=ALICE, recipients=[Recipient(BOB)], body="8BITMIME",
                    client=ClientInfo("192.0.2.1", "mx.example.org", "ESMTP", None, None))


def commit_files(queue: FileQueueStore) -> QueueRecord:
    body = queue.new_body()
    body.write(BODY)
    return queue.commit_sync(body, envelope(), [RcptState(BOB, BOB)])


async def commit_journal(queue: FileQueueStore) -> QueueRecord:
    body = queue.new_body()
    body.write(BODY)
    return await queue.commit(body, envelope(), [RcptState(BOB, BOB)], fast=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "queue"


@pytest.fixture
def offline(root: Path) -> Iterator[FileQueueStore]:
    """The queue as ``pigeon queue`` opens it with the server stopped."""
    q = FileQueueStore(root, FakeClock())
    yield q
    q.close()


def journal_left_by_a_stopped_server(root: Path, n: int) -> list[QueueRecord]:
    """``n`` messages committed to the main journal and never delivered (a server stopped
    while they were held)."""
    server = FileQueueStore(root, FakeClock(), journal=True)
    try:
        return [run(lambda: commit_journal(server)) for _ in range(n)]
    finally:
        server.close()


# -- server stopped (rules 1 and 3) ---------------------------------------------------------------

def test_files_list_show_hold_release_delete(offline: FileQueueStore) -> None:
    rec = commit_files(offline)
    [listed] = queueops.list_queue(offline, rec.created + 5)
    assert isinstance(listed, dict) and listed["id"] == rec.id and listed["state"] == "active"
    assert listed["age"] == 5
    shown = queueops.show(offline, rec.id.lower(), rec.created)  # ids are taken in any case
    assert shown["state"] == "active" and "Subject: queued" in str(shown["headers"])
    with pytest.raises(ValueError):
        queueops.release(offline, rec.id)  # not on hold
    assert queueops.hold(offline, rec.id) == rec.id and offline.state_of(rec.id) == "hold"
    assert queueops.release(offline, rec.id) == rec.id and offline.state_of(rec.id) == "active"
    assert queueops.delete(offline, rec.id) == rec.id
    assert queueops.list_queue(offline, 0.0) == []
    with pytest.raises(FileNotFoundError):
        queueops.show(offline, rec.id, 0.0)
    with pytest.raises(ValueError):
        queueops.show(offline, "../etc/passwd", 0.0)


def test_journal_mail_of_a_stopped_server_is_listed_shown_held_and_deleted(
        root: Path, offline: FileQueueStore) -> None:
    held, deleted, other = journal_left_by_a_stopped_server(root, 3)
    states = {m["id"]: m["state"] for m in queueops.list_queue(offline, 0.0)}  # type: ignore[index]
    assert states == {held.id: "journal", deleted.id: "journal", other.id: "journal"}
    shown = queueops.show(offline, held.id, 0.0)
    assert shown["state"] == "journal" and "Subject: queued" in str(shown["headers"])

    assert queueops.hold(offline, held.id) == held.id  # settles every journal first
    assert offline.state_of(held.id) == "hold"
    assert offline.state_of(deleted.id) == offline.state_of(other.id) == "active"
    assert offline.journal_messages() == []
    assert queueops.delete(offline, deleted.id) == deleted.id
    states = {m["id"]: m["state"] for m in queueops.list_queue(offline, 0.0)}  # type: ignore[index]
    assert states == {held.id: "hold", other.id: "active"}
    assert offline.body_path(other.id).read_bytes() == BODY


# -- server running (rule 2) ---------------------------------------------------------------------

class Agent:
    """Delivers when ``gate`` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        await self.gate.wait()
        return [RecipientResult(r, "deferred", Reply(451, "4.2.0", "later"), "local") for r in job.recipients]


class Domains:
    def is_local_domain(self, domain: str) -> bool:
        return True


def lane_rig(root: Path) -> tuple[FileQueueStore, JournalLane, Agent, list[QueueRecord]]:
    queue = FileQueueStore(root, FakeClock(), journal=True, flush="file")
    agent = Agent()
    finished: list[QueueRecord] = []

    async def finish(record: QueueRecord, results: object) -> None:
        finished.append(record)

    lane = JournalLane(queue, agent, Domains(), FakeClock(), finish=finish, submit=finished.append)
    return queue, lane, agent, finished


def test_running_a_message_being_delivered_is_refused_then_a_held_one_is_deleted(root: Path) -> None:
    queue, lane, agent, finished = lane_rig(root)
    real_spill = queue.spill
    full = True

    async def spill(record: QueueRecord, state: State = "active") -> None:
        if full:
            raise QueueWriteError(str(OSError(errno.ENOSPC, "No space left on device")))
        await real_spill(record, state)

    queue.spill = spill  # type: ignore[method-assign]

    async def go() -> None:
        nonlocal full
        rec = await commit_journal(queue)
        lane.take(rec)
        await asyncio.sleep(0)
        with pytest.raises(MessageBusy):
            await queueops.delete_running(queue, lane, rec.id)  # being delivered
        with pytest.raises(MessageBusy):
            await queueops.hold_running(queue, lane, rec.id)
        agent.gate.set()
        await lane.wait_idle()  # deferred, the spill failed: held in the journal
        assert lane.owns(rec.id) and [h.id for h in lane.held()] == [rec.id]
        with pytest.raises(ValueError, match="stays in the intake journal"):
            await queueops.hold_running(queue, lane, rec.id)  # still no room
        assert lane.owns(rec.id)
        assert await queueops.delete_running(queue, lane, rec.id) == rec.id
        assert not lane.owns(rec.id) and not queue.in_journal(rec.id)
        full = False
        assert lane.retry_now() == 0  # nothing left to try
        await lane.stop(1.0)

    try:
        run(go)
        assert finished == []  # never delivered, never handed on
        assert queue.journal_messages() == []
    finally:
        queue.close()


def test_running_a_held_journal_message_is_put_on_hold(root: Path) -> None:
    queue, lane, agent, finished = lane_rig(root)
    real_spill = queue.spill
    spills = 0

    async def spill(record: QueueRecord, state: State = "active") -> None:
        nonlocal spills
        spills += 1
        if spills == 1:
            raise QueueWriteError("No space left on device")
        await real_spill(record, state)

    queue.spill = spill  # type: ignore[method-assign]
    agent.gate.set()

    async def go() -> QueueRecord:
        rec = await commit_journal(queue)
        lane.take(rec)
        await lane.wait_idle()
        assert lane.owns(rec.id)
        assert await queueops.hold_running(queue, lane, rec.id) == rec.id
        assert not lane.owns(rec.id)
        await lane.stop(1.0)
        return rec

    try:
        rec = run(go)
        back = queue.load(rec.id)
        assert back.state == "hold" and back.rcpts[0].status == "deferred"
        assert "held in the intake journal" in back.rcpts[0].last_reply
        assert queue.body_path(rec.id).read_bytes() == BODY and queue.journal_messages() == []
        assert finished == []
    finally:
        queue.close()


def test_running_files_are_acted_on_as_offline(root: Path) -> None:
    queue, lane, _, _ = lane_rig(root)
    try:
        rec = commit_files(queue)

        async def go() -> None:
            assert await queueops.hold_running(queue, lane, rec.id) == rec.id
            assert queue.state_of(rec.id) == "hold"
            assert await queueops.delete_running(queue, lane, rec.id) == rec.id

        run(go)
        assert queueops.list_queue(queue, 0.0) == []
    finally:
        queue.close()
