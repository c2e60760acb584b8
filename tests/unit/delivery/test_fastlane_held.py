"""The fast road on a full disk (pigeon.qmgr.lane Rule 5): a message whose delivery and
spill both failed is held in the intake journal and tried again, without a restart, until it
is delivered or moved into the queue files; ``retry_now`` is ``pigeon queue flush``.

The faults are injected where the disk is written (``MaildirStore.write_tmp``, the queue's
spill), so that each test controls exactly which write fails; the same road on a real full
file system is tests/integration/test_full_disk.py.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.core.address import Address
from pigeon.qmgr import lane as fastlane
from pigeon.qmgr.lane import JournalLane
from pigeon.queue.record import QueueRecord, State
from pigeon.store.maildir import PendingFile
from tests.unit.delivery.test_fastlane import BOB, CAROL, Barrier, Rig, commit, make_rig, run

FIRST, MAX = 0.02, 0.08  # seconds: the back-off, made short for these tests


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    # raising=False: on code without Rule 6 the tests fail on what the lane does, not here
    monkeypatch.setattr(fastlane, "HELD_RETRY_FIRST", FIRST, raising=False)
    monkeypatch.setattr(fastlane, "HELD_RETRY_MAX", MAX, raising=False)
    r = make_rig(tmp_path, "file")
    yield r
    r.queue.close()


class Disk:
    """Which writes fail with ENOSPC: Maildir files (per recipient) and the spill."""

    def __init__(self, rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full_for: set[str] = set()  # recipient keys whose Maildir write fails
        self.spill_full = False
        self.spills = 0
        real_write, real_spill = rig.mail.write_tmp, rig.queue.spill

        def write_tmp(address: Address, prefix: bytes, body: bytes, folder: str | None = None) -> PendingFile:
            if address.key in self.full_for:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(address, prefix, body, folder)

        async def spill(record: QueueRecord, state: State = "active") -> None:
            self.spills += 1
            if self.spill_full:
                raise OSError(errno.ENOSPC, "No space left on device")
            await real_spill(record, state)

        monkeypatch.setattr(rig.mail, "write_tmp", write_tmp)
        monkeypatch.setattr(rig.queue, "spill", spill)

    def fill(self, *who: Address) -> None:
        self.full_for = {a.key for a in who}
        self.spill_full = True

    def free(self) -> None:
        self.full_for = set()
        self.spill_full = False


async def settle(rig: Rig, lane: JournalLane) -> None:
    """The lane idle, the done entries written, the engine thread's work done."""
    await lane.wait_idle()
    assert rig.queue.journal is not None
    await rig.queue.journal.sync()
    await rig.queue.commits.flush(Barrier())


async def wait_for(condition: object, what: str, timeout: float = 2.0) -> None:
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_a_message_that_cannot_be_delivered_or_spilled_is_held_then_delivered_when_space_returns(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(rig, monkeypatch)
    lane = rig.lane()

    async def go() -> QueueRecord:
        disk.fill(BOB)
        record = await commit(rig, BOB)
        lane.take(record)
        await settle(rig, lane)
        held = lane.held()
        assert [h.id for h in held] == [record.id]
        (rcpt,) = held[0].rcpts
        assert rcpt.status == "deferred"
        assert rcpt.last_reply.startswith("452 4.3.1")
        assert "held in the intake journal" in rcpt.last_reply
        assert rig.journal_pending() == [record.id]  # still live: its 250 came from there
        await wait_for(lambda: disk.spills >= 3, "two more tries on their own")
        assert lane.held() and rig.maildir_files(BOB, "new") == []
        disk.free()
        await wait_for(lambda: not lane.held(), "delivery once there is room")
        await settle(rig, lane)
        return record

    record = run(go)
    assert len(rig.maildir_files(BOB, "new")) == 1
    assert rig.journal_pending() == []  # done
    assert (lane.delivered, lane.spilled) == (1, 0)
    assert rig.rec.submitted == [] and rig.rec.finished == []
    assert not (rig.queue.root / "active" / record.id).exists()


def test_a_partly_delivered_held_message_is_spilled_with_its_results_never_delivered_twice(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(rig, monkeypatch)
    lane = rig.lane()

    async def go() -> QueueRecord:
        disk.fill(CAROL)  # bob's mailbox takes it, carol's does not, nor does the queue
        record = await commit(rig, BOB, CAROL)
        lane.take(record)
        await settle(rig, lane)
        (held,) = lane.held()
        assert [(r.address, r.status) for r in held.rcpts] == [(BOB, "delivered"), (CAROL, "deferred")]
        disk.free()
        assert lane.retry_now() == 1
        await settle(rig, lane)
        return record

    record = run(go)
    assert len(rig.maildir_files(BOB, "new")) == 1  # once, not again at the retry
    assert rig.maildir_files(CAROL, "new") == []  # the queue manager's now, with its result
    ((finished, results),) = rig.rec.finished
    assert finished.id == record.id
    assert [(r.address, res.status) for r, res in results] == [(BOB, "delivered"), (CAROL, "deferred")]
    assert (rig.queue.root / "active" / record.id).exists()
    assert rig.journal_pending() == [] and lane.held() == []


def test_the_pause_between_tries_doubles_up_to_the_maximum(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    first, most = 10.0, 40.0  # long enough that only retry_now tries again here
    monkeypatch.setattr(fastlane, "HELD_RETRY_FIRST", first, raising=False)
    monkeypatch.setattr(fastlane, "HELD_RETRY_MAX", most, raising=False)
    disk = Disk(rig, monkeypatch)
    lane = rig.lane()
    pauses: list[float] = []

    async def go() -> None:
        disk.fill(BOB)
        record = await commit(rig, BOB)
        lane.take(record)
        for _ in range(5):
            await settle(rig, lane)
            (held,) = lane.held()
            pauses.append(held.rcpts[0].next_try - rig.clock.now())
            lane.retry_now()  # one more failing try, now
        await settle(rig, lane)
        disk.free()
        lane.retry_now()
        await settle(rig, lane)

    run(go)
    assert pauses == pytest.approx([first, 2 * first, most, most, most])
    assert len(rig.maildir_files(BOB, "new")) == 1


def test_stop_leaves_held_messages_in_the_journal(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(rig, monkeypatch)
    lane = rig.lane()

    async def go() -> QueueRecord:
        disk.fill(BOB)
        record = await commit(rig, BOB)
        lane.take(record)
        await settle(rig, lane)
        tries = disk.spills
        await lane.stop(1.0)
        disk.free()
        await asyncio.sleep(3 * MAX)
        assert disk.spills == tries  # no try after stop
        assert lane.retry_now() == 0
        return record

    record = run(go)
    assert rig.journal_pending() == [record.id]  # the next start's recovery takes it
    assert rig.maildir_files(BOB, "new") == []
