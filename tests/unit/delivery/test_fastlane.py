"""The fast road on real files: the fast agent (pigeon.delivery.fastlane.FastLocalDelivery),
run by the queue manager's lane (pigeon.qmgr.lane.JournalLane), delivers a journaled message
from memory into real Maildirs; every other outcome is spilled into the queue files."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address, parse_address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import RecipientResult
from pigeon.delivery.fastlane import FastLocalDelivery
from pigeon.qmgr.lane import JournalLane
from pigeon.durable.io import FileIO, syncfs_reports_errors
from pigeon.durable.journal import pending
from pigeon.durable.testing import FaultyIO
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore
from pigeon.store.changes import ChangeBus
from pigeon.store.maildir import MaildirStore

T = TypeVar("T")
WAIT = 5.0  # seconds; every wait here normally takes milliseconds
ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
CAROL = Address("carol", "example.net")
DAVE = Address("dave", "example.net")  # a local domain, but no such user
ERIN = Address("erin", "elsewhere.example")  # not a local domain
BODY = b"From: alice@example.org\r\nSubject: hi\r\n\r\nHello,\r\nbye.\r\n"
BODY_LF = BODY.replace(b"\r\n", b"\n")

Results = list[tuple[RcptState, RecipientResult]]


class FakeDirectory:
    """Users and local domains (the directory is sqlite in the server; a dict is enough here)."""

    def __init__(self, users: tuple[Address, ...], domains: tuple[str, ...]) -> None:
        self.keys = {a.key for a in users}
        self.domains = set(domains)

    def user_exists(self, address: Address) -> bool:
        return address.key in self.keys

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.domains


@dataclass
class Recorder:
    finished: list[tuple[QueueRecord, Results]] = field(default_factory=list)
    submitted: list[QueueRecord] = field(default_factory=list)

    async def finish(self, record: QueueRecord, results: Results) -> None:
        self.finished.append((record, results))

    def submit(self, record: QueueRecord) -> None:
        self.submitted.append(record)


@dataclass
class Rig:
    queue: QueueStore
    mail: MaildirStore
    directory: FakeDirectory
    clock: FakeClock
    changes: ChangeBus
    rec: Recorder
    fio: FaultyIO  # the IO seam of both stores: tests set faults on it

    @property
    def whole_fs(self) -> bool:
        return self.queue.commits.whole_fs

    def lane(self, **kw: int) -> JournalLane:
        agent = FastLocalDelivery(self.mail, self.directory, self.queue.commits, self.changes)
        return JournalLane(self.queue, agent, self.directory, self.clock,
                           finish=self.rec.finish, submit=self.rec.submit, **kw)

    def journal_pending(self) -> list[str]:
        assert self.queue.journal is not None
        return [e.id for e in pending(self.queue.journal.root)]

    def maildir_files(self, addr: Address, sub: str) -> list[str]:
        d = self.mail.user_root(addr) / sub
        return sorted(os.listdir(d)) if d.is_dir() else []


# The machines this runs on have Linux >= 5.8; elsewhere fs_rig fails loudly rather than skip.
FLUSH_MODES = ["file", "filesystem"]


def make_rig(tmp_path: Path, flush: str, fio: FaultyIO | None = None) -> Rig:
    clock = FakeClock()
    fio = fio if fio is not None else FaultyIO()
    queue = QueueStore(tmp_path / "queue", clock, journal=True, flush=flush, io=fio)
    mail = MaildirStore(tmp_path / "mail", "mx.example.net", commits=queue.commits)  # as the app does
    return Rig(queue, mail, FakeDirectory((BOB, CAROL), ("example.net",)), clock, ChangeBus(), Recorder(), fio)


@pytest.fixture(params=FLUSH_MODES)
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """Every test runs with per-file fsyncs and (where syncfs reports errors) with one syncfs
    per batch of deliveries (Rule 5)."""
    r = make_rig(tmp_path, request.param)
    yield r
    r.queue.close()


@pytest.fixture
def file_rig(tmp_path: Path) -> Iterator[Rig]:
    """Per-file fsyncs only (``[queue] flush = "file"``)."""
    r = make_rig(tmp_path, "file")
    assert not r.whole_fs
    yield r
    r.queue.close()


@pytest.fixture
def fs_rig(tmp_path: Path) -> Iterator[Rig]:
    """One syncfs per batch (``[queue] flush = "filesystem"``); needs Linux >= 5.8."""
    if not syncfs_reports_errors():
        pytest.fail("syncfs with error reporting (Linux >= 5.8) is needed for these tests")
    r = make_rig(tmp_path, "filesystem")
    assert r.whole_fs
    yield r
    r.queue.close()


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(factory(), WAIT)
    return asyncio.run(main())


def rcpt_states(*rcpts: Address, notify: tuple[str, ...] = ("FAILURE",)) -> list[RcptState]:
    return [RcptState(r, r, notify, f"rfc822;{r}") for r in rcpts]


async def commit(rig: Rig, *rcpts: Address, notify: tuple[str, ...] = ("FAILURE",),
                 data: bytes = BODY, sender: Address | None = ALICE) -> QueueRecord:
    env = Envelope(sender=sender, recipients=[Recipient(r, notify, f"rfc822;{r}") for r in rcpts],
                   body="8BITMIME", client=ClientInfo("192.0.2.1", "mx.example.org", "ESMTP", None, None))
    body = rig.queue.new_body()
    body.write(data)
    record = await rig.queue.commit(body, env, rcpt_states(*rcpts, notify=notify), fast=True)
    assert rig.queue.in_journal(record.id)  # its body held in memory by the queue
    return record


async def deliver(rig: Rig, lane: JournalLane, *rcpts: Address, notify: tuple[str, ...] = ("FAILURE",),
                  data: bytes = BODY, sender: Address | None = ALICE) -> QueueRecord:
    record = await commit(rig, *rcpts, notify=notify, data=data, sender=sender)
    lane.take(record)
    await lane.wait_idle()
    assert rig.queue.journal is not None
    await rig.queue.journal.sync()  # the done entries
    await rig.queue.commits.flush(Barrier())  # unlinks and closes have run
    return record


class Barrier:
    key = ("barrier",)

    def run(self, io: FileIO) -> None:
        pass


def expected(rcpt: Address, sender: str = "<alice@example.org>", body: bytes = BODY_LF) -> bytes:
    return f"Return-Path: {sender}\nDelivered-To: {rcpt}\n".encode() + body


def check_name(path: Path, content: bytes) -> None:
    lf = content.count(b"\n")
    assert path.name.endswith(f",S={len(content)},W={len(content) + lf}"), path.name


# -- delivered in the lane (Rule 1) ------------------------------------------------------------------

def test_one_message_to_two_local_users_lands_once_in_each(rig: Rig) -> None:
    lane = rig.lane()
    bob_box = rig.mail.user_root(BOB)

    async def go() -> tuple[QueueRecord, bool]:
        woken = rig.changes.watch(bob_box)
        record = await deliver(rig, lane, BOB, CAROL)
        return record, woken.is_set()

    record, woken = run(go)
    for addr in (BOB, CAROL):
        [name] = rig.maildir_files(addr, "new")
        path = rig.mail.user_root(addr) / "new" / name
        content = path.read_bytes()
        assert content == expected(addr)
        check_name(path, content)
        assert rig.maildir_files(addr, "tmp") == []
        assert rig.maildir_files(addr, "cur") == []
    assert woken  # IMAP IDLE on Bob's INBOX is told
    assert (lane.delivered, lane.spilled) == (1, 0)
    assert rig.rec.finished == [] and rig.rec.submitted == []
    assert rig.journal_pending() == []  # done: a restart delivers nothing again
    assert rig.queue.journal is not None and rig.queue.journal.live == 0
    for sub in ("active", "msg", "deferred", "tmp"):
        assert os.listdir(rig.queue.root / sub) == [], sub
    assert not rig.queue.in_journal(record.id)  # the lane took the body


def test_null_sender_and_a_body_without_final_newline(rig: Rig) -> None:
    lane = rig.lane()
    data = b"Subject: x\r\n\r\nno newline at the end\r"  # a bare CR at the very end stays
    run(lambda: deliver(rig, lane, BOB, data=data, sender=None))
    [name] = rig.maildir_files(BOB, "new")
    path = rig.mail.user_root(BOB) / "new" / name
    content = path.read_bytes()
    assert content == expected(BOB, "<>", b"Subject: x\n\nno newline at the end\r")
    check_name(path, content)


def test_a_duplicate_recipient_gets_one_file(rig: Rig) -> None:
    lane = rig.lane()
    bob_upper = parse_address("BOB@Example.NET")
    run(lambda: deliver(rig, lane, BOB, bob_upper, BOB))
    assert len(rig.maildir_files(BOB, "new")) == 1
    assert lane.delivered == 1
    assert rig.journal_pending() == []


def test_many_messages_at_once_share_flushes(rig: Rig) -> None:
    lane = rig.lane()
    n = 20

    gs = rig.queue.commits

    async def go() -> tuple[int, int]:
        records = [await commit(rig, BOB, CAROL) for _ in range(n)]
        before = (gs.batches, gs.calls)
        for r in records:
            lane.take(r)
        await lane.wait_idle()
        return before

    batches, calls = run(go)
    assert len(rig.maildir_files(BOB, "new")) == n and len(rig.maildir_files(CAROL, "new")) == n
    assert lane.delivered == n
    if rig.whole_fs:
        # One file-system flush for all the files, one for all their new/ entries.
        assert (gs.batches - batches, gs.calls - calls) == (2, 2)
    else:
        # Every file's fsync and each new/ fsync went through the one sync thread, in batches.
        assert gs.batches - batches < gs.calls - calls


# -- spilled (Rule 2) -----------------------------------------------------------------------------------

def test_an_unknown_user_spills_with_results(rig: Rig) -> None:
    lane = rig.lane()
    record = run(lambda: deliver(rig, lane, BOB, DAVE))
    assert (lane.delivered, lane.spilled) == (0, 1)
    assert os.listdir(rig.queue.root / "active") == [record.id]
    assert rig.queue.body_path(record.id).read_bytes() == BODY
    [(rec, results)] = rig.rec.finished
    assert rec.id == record.id and rig.rec.submitted == []
    assert [(rc.address, res.status) for rc, res in results] == [(BOB, "delivered"), (DAVE, "failed")]
    bob_res, dave_res = results[0][1], results[1][1]
    assert (bob_res.reply.code, bob_res.host) == (250, "local")
    assert (dave_res.reply.code, dave_res.reply.enhanced) == (550, "5.1.1")
    assert "user unknown" in dave_res.reply.text
    [name] = rig.maildir_files(BOB, "new")  # Bob has his copy (the queue won't send it again)
    assert (rig.mail.user_root(BOB) / "new" / name).read_bytes() == expected(BOB)
    assert rig.maildir_files(DAVE, "new") == []
    assert rig.journal_pending() == []  # in the queue files now, not in the journal


def test_a_non_local_recipient_spills_and_is_submitted_untouched(rig: Rig) -> None:
    lane = rig.lane()
    record = run(lambda: deliver(rig, lane, BOB, ERIN))
    assert (lane.delivered, lane.spilled) == (0, 1)
    assert [r.id for r in rig.rec.submitted] == [record.id] and rig.rec.finished == []
    assert os.listdir(rig.queue.root / "active") == [record.id]
    assert rig.queue.body_path(record.id).read_bytes() == BODY
    assert not rig.mail.root.exists() or list(rig.mail.root.rglob("*,S=*")) == []  # nothing delivered
    back = rig.queue.load(record.id)
    assert [(r.address, r.status) for r in back.rcpts] == [(BOB, "pending"), (ERIN, "pending")]
    assert rig.journal_pending() == []


def test_notify_success_spills_with_results(rig: Rig) -> None:
    lane = rig.lane()
    record = run(lambda: deliver(rig, lane, BOB, notify=("SUCCESS", "FAILURE")))
    assert (lane.delivered, lane.spilled) == (0, 1)
    [(rec, results)] = rig.rec.finished
    assert rec.id == record.id
    assert [(rc.address, res.status) for rc, res in results] == [(BOB, "delivered")]
    assert len(rig.maildir_files(BOB, "new")) == 1  # delivered; the queue manager sends the DSN
    assert os.listdir(rig.queue.root / "active") == [record.id]
    assert rig.journal_pending() == []


def test_a_failed_fsync_defers_and_leaves_no_file(file_rig: Rig) -> None:
    rig = file_rig
    rig.fio.fail("fsync", match="/mail/", error=errno.EIO, times=None)
    lane = rig.lane()
    record = run(lambda: deliver(rig, lane, BOB, CAROL))
    assert (lane.delivered, lane.spilled) == (0, 1)
    [(rec, results)] = rig.rec.finished
    assert [(rc.address, res.status, res.reply.code) for rc, res in results] == [
        (BOB, "deferred", 451), (CAROL, "deferred", 451)]
    for addr in (BOB, CAROL):
        assert rig.maildir_files(addr, "new") == []
        assert rig.maildir_files(addr, "tmp") == []  # Rule 6 of the store: nothing left behind
    assert os.listdir(rig.queue.root / "active") == [record.id]
    assert rig.queue.body_path(record.id).read_bytes() == BODY


def test_a_full_disk_on_the_new_directory_fsync_defers_with_452(file_rig: Rig) -> None:
    rig = file_rig
    rig.fio.fail("fsync_dir", match="/new", error=errno.ENOSPC, times=None)
    lane = rig.lane()
    record = run(lambda: deliver(rig, lane, BOB))
    [(rec, results)] = rig.rec.finished
    assert rec.id == record.id
    assert [(res.status, res.reply.code, res.reply.enhanced) for _, res in results] == [("deferred", 452, "4.3.1")]
    assert rig.maildir_files(BOB, "new") == []  # linked, but not durable: removed again
    assert rig.maildir_files(BOB, "tmp") == []


def test_max_inflight_zero_spills_everything(rig: Rig) -> None:
    lane = rig.lane(max_inflight=0)

    async def go() -> list[QueueRecord]:
        return [await deliver(rig, lane, BOB) for _ in range(3)]

    records = run(go)
    assert (lane.delivered, lane.spilled) == (0, 3)
    assert [r.id for r in rig.rec.submitted] == [r.id for r in records]
    assert sorted(os.listdir(rig.queue.root / "active")) == sorted(r.id for r in records)
    assert rig.maildir_files(BOB, "new") == []
    assert rig.journal_pending() == []


def test_a_failed_spill_leaves_the_message_in_the_journal(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(record: QueueRecord, state: str = "active") -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    lane = rig.lane()
    monkeypatch.setattr(rig.queue, "spill", broken)
    record = run(lambda: deliver(rig, lane, ERIN))
    assert (lane.delivered, lane.spilled) == (0, 0)
    assert rig.rec.submitted == [] and rig.rec.finished == []
    assert rig.journal_pending() == [record.id]  # recovered at the next start


def test_the_agent_reads_its_body_from_the_job_whatever_holds_it(rig: Rig) -> None:
    """delivery.base Rule 1: the same agent delivers a body from memory, from a journal segment
    and from a queue file, and never asks which."""
    from pigeon.core.queueid import QueueId
    from pigeon.delivery.base import DeliveryJob
    from pigeon.queue.source import FileBody, MemoryBody, SegmentBody

    agent = FastLocalDelivery(rig.mail, rig.directory, rig.queue.commits, None)

    async def go() -> list[str]:
        record = await commit(rig, BOB)
        assert rig.queue.journal is not None
        path, offset, length = rig.queue.journal.body_location(record.id)
        spool = rig.queue.root / "body-copy"
        spool.write_bytes(BODY)
        sources = [rig.queue.body(record.id), SegmentBody(path, offset, length, rig.queue.io), FileBody(spool)]
        assert isinstance(sources[0], MemoryBody)
        out = []
        for source in sources:
            [res] = await agent.deliver(DeliveryJob(QueueId(record.id), ALICE, (BOB,), source))
            out.append(res.status)
        await rig.queue.remove_async(record.id)  # the journal's done entry
        return out

    assert run(go) == ["delivered"] * 3
    files = rig.maildir_files(BOB, "new")
    assert len(files) == 3
    for name in files:
        assert (rig.mail.user_root(BOB) / "new" / name).read_bytes() == expected(BOB)


# -- Rule 5: with a file-system flush, deliveries share syncfs calls; the commit does not wait ------

def test_the_commit_flushes_only_the_journal_and_a_delivery_costs_two_shared_flushes(fs_rig: Rig) -> None:
    rig = fs_rig
    lane = rig.lane()

    async def go() -> None:
        record = await commit(rig, BOB, CAROL)
        # Committed by the journal's fdatasync (durable.journal Rule 2): no file-system flush,
        # and nothing written into the Maildirs yet.
        assert rig.fio.calls["syncfs"] == 0
        for addr in (BOB, CAROL):
            assert rig.maildir_files(addr, "tmp") == [] and rig.maildir_files(addr, "new") == []
        lane.take(record)
        await lane.wait_idle()

    run(go)
    assert rig.fio.calls["syncfs"] == 2  # the files' flush, then the one that makes the new/ entries durable
    assert lane.delivered == 1
    for addr in (BOB, CAROL):
        assert rig.maildir_files(addr, "tmp") == []
        [name] = rig.maildir_files(addr, "new")
        path = rig.mail.user_root(addr) / "new" / name
        assert path.read_bytes() == expected(addr)
        check_name(path, expected(addr))


def test_a_file_is_flushed_before_it_is_linked_into_new(tmp_path: Path) -> None:
    if not syncfs_reports_errors():
        pytest.fail("syncfs with error reporting (Linux >= 5.8) is needed for this test")
    seen: list[tuple[list[str], list[str]]] = []

    class Watching(FaultyIO):
        def syncfs(self, fd: int) -> None:
            seen.append((rig.maildir_files(BOB, "tmp"), rig.maildir_files(BOB, "new")))
            super().syncfs(fd)

    rig = make_rig(tmp_path, "filesystem", Watching())
    lane = rig.lane()
    run(lambda: deliver(rig, lane, BOB))
    assert lane.delivered == 1
    [(tmp1, new1), (tmp2, new2)] = seen
    assert len(tmp1) == 1 and new1 == []  # the first flush: the file written, not yet linked
    assert tmp2 == [] and len(new2) == 1  # the second: linked, and its entry made durable
    rig.queue.close()


def test_many_messages_share_each_file_system_flush(fs_rig: Rig) -> None:
    rig = fs_rig
    lane = rig.lane()
    n = 20

    async def go() -> None:
        records = await asyncio.gather(*(commit(rig, BOB) for _ in range(n)))
        assert rig.fio.calls["syncfs"] == 0  # twenty commits: the journal's fdatasyncs only
        for r in records:
            lane.take(r)
        await lane.wait_idle()

    run(go)
    assert len(rig.maildir_files(BOB, "new")) == n and lane.delivered == n
    assert rig.fio.calls["syncfs"] == 2  # every file in one flush, every new/ entry in the next


def test_a_failed_commit_flush_refuses_the_message_and_writes_no_mailbox_file(fs_rig: Rig) -> None:
    from pigeon.queue.store import QueueWriteError

    rig = fs_rig
    rig.fio.fail("fdatasync", match="seg.", error=errno.EIO)
    lane = rig.lane()

    async def go() -> None:
        with pytest.raises(QueueWriteError):
            await commit(rig, BOB, CAROL)

    run(go)
    assert lane.delivered == 0
    for addr in (BOB, CAROL):
        assert rig.maildir_files(addr, "tmp") == []
        assert rig.maildir_files(addr, "new") == []
    assert rig.journal_pending() == []  # marked failed: a recovery does not deliver it


def test_a_failed_file_flush_defers_with_452_and_leaves_no_file(
        fs_rig: Rig) -> None:
    rig = fs_rig
    rig.fio.fail("syncfs", nth=1, error=errno.ENOSPC)  # the files' flush fails
    lane = rig.lane()
    record = run(lambda: deliver(rig, lane, BOB))
    assert (lane.delivered, lane.spilled) == (0, 1)
    [(rec, results)] = rig.rec.finished
    assert rec.id == record.id
    assert [(res.status, res.reply.code, res.reply.enhanced) for _, res in results] == [("deferred", 452, "4.3.1")]
    assert rig.maildir_files(BOB, "tmp") == [] and rig.maildir_files(BOB, "new") == []
    assert os.listdir(rig.queue.root / "active") == [record.id]



def test_a_failed_new_entry_flush_defers_with_452_and_leaves_no_file(
        fs_rig: Rig) -> None:
    rig = fs_rig
    rig.fio.fail("syncfs", nth=2, error=errno.ENOSPC)  # the files' flush works, the new/ one not
    lane = rig.lane()
    record = run(lambda: deliver(rig, lane, BOB))
    assert (lane.delivered, lane.spilled) == (0, 1)
    [(rec, results)] = rig.rec.finished
    assert rec.id == record.id
    assert [(res.status, res.reply.code, res.reply.enhanced) for _, res in results] == [("deferred", 452, "4.3.1")]
    assert rig.maildir_files(BOB, "new") == []  # linked, but not durable: removed again
    assert rig.maildir_files(BOB, "tmp") == []
    assert os.listdir(rig.queue.root / "active") == [record.id]
