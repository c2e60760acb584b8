"""A crash at every step of enqueue, deliver and recover loses nothing acknowledged.

Each scenario runs once without faults to list its steps: every call through the IO seam
that changes the disk (``durable.testing``), from the point the scenario marks on. Each test
then runs the scenario again with a crash injected at one of those steps (or, for the last
one, none: a power cut right after it finished) and asks ``FaultyIO.crash_images`` for every
state the disk may be left in: per directory and per file, what was flushed or what the page
cache held. For each such state, a fresh ``QueueStore.recover()`` must find

* every message whose commit returned, whole (record readable, body byte for byte), or —
  for the delivery scenarios — delivered whole into its Maildir, or accepted by the next hop
  (relay mail, relayed from memory on the fast road);
* nothing half there: no record in ``corrupt/``, no record without its body, no Maildir file
  that is not a whole message;

and, for the delivery scenarios, a queue manager run over the recovered queue then delivers
every acknowledged message (at least once).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.config.loader import parse_config
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.queueid import is_queue_id
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryJob
from pigeon.delivery.fastlane import FastLocalDelivery
from pigeon.qmgr.lane import JournalLane
from pigeon.delivery.local import LocalDelivery
from pigeon.delivery.relay import RelayJob, RelayResult
from pigeon.durable.io import syncfs_reports_errors
from pigeon.durable.journal import Journal
from pigeon.durable.testing import SPARE_THREAD, Crash, FaultyIO, NoFlushIO
from pigeon.qmgr.manager import QueueManager
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.proto.smtp.reply import Reply
from pigeon.queue.store import QueueStore
from pigeon.store.maildir import MaildirStore

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
CAROL = Address("carol", "example.net")
DAN = Address("dan", "example.com")  # other domains: relay mail
ERIN = Address("erin", "example.com")
WAIT = 10.0  # seconds: a generous bound for one scenario; each takes milliseconds
MUTATING = frozenset({"write", "writev", "pwrite", "pwritev", "ftruncate", "fsync", "fdatasync", "syncfs",
                      "fsync_dir", "rename", "rename_noreplace", "link", "unlink", "mkdir"})


def body(i: int) -> bytes:
    return (f"From: alice@example.org\r\nSubject: message {i}\r\n\r\n" + f"line {i}\r\n" * (i + 3)).encode()


def in_maildir(rcpt: Address, data: bytes) -> bytes:
    """What local delivery writes for ``data`` (delivery.local Rule 2, store.maildir Rule 3)."""
    return f"Return-Path: <{ALICE}>\nDelivered-To: {rcpt}\n".encode() + data.replace(b"\r\n", b"\n")


def envelope(rcpt: Address) -> Envelope:
    return Envelope(ALICE, [Recipient(rcpt, ("FAILURE",), f"rfc822;{rcpt}")], body="8BITMIME",
                    client=ClientInfo("192.0.2.1", "mx.example.org", "ESMTP", None, None))


def rcpts(rcpt: Address) -> list[RcptState]:
    return [RcptState(rcpt, rcpt, ("FAILURE",), f"rfc822;{rcpt}")]


class Directory:
    """Users and local domains (delivery's lookups)."""

    def user_exists(self, address: Address) -> bool:
        return address.key in (BOB.key, CAROL.key)

    def is_local_domain(self, domain: str) -> bool:
        return domain == "example.net"


class NoRemote:
    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        raise AssertionError("every recipient here is local")


class NoBounces:
    async def bounce(self, record: QueueRecord, failed: object) -> None:
        raise AssertionError("nothing here bounces")

    async def delay_warning(self, record: QueueRecord, delayed: object) -> None:
        raise AssertionError("nothing here is delayed")

    async def success(self, record: QueueRecord, relayed: object, action: str) -> None:
        raise AssertionError("nobody asked for a success notice")


CONFIG = parse_config('hostname = "mx.example.net"\ndata_dir = "/nonexistent"\ndomains = ["example.net"]\n',
                      "test", Path("/"))


def manager(queue: QueueStore, mail: MaildirStore) -> QueueManager:
    local = LocalDelivery(mail, Directory(), "mx.example.net")
    return QueueManager(queue, local, NoRemote(), Directory(), lambda: CONFIG, FakeClock(), NoBounces(),
                        concurrency=1)  # one attempt at a time: the same steps in the same order


# -- a run of a scenario ------------------------------------------------------------------------------

@dataclass
class Run:
    data: Path
    fio: FaultyIO
    expected: dict[str, bytes] = field(default_factory=dict)  # every message begun: id -> body
    to: dict[str, Address] = field(default_factory=dict)  # its recipient
    acked: set[str] = field(default_factory=set)  # the commit returned: the client got its 250
    relayed: set[str] = field(default_factory=set)  # the next hop answered 250 (outside the machine)
    start: int = 0  # the trace index from which steps count

    def mark(self) -> None:
        self.start = len(self.fio.trace)


Scenario = Callable[[Run], None]


async def until(cond: Callable[[], bool], fio: FaultyIO) -> None:
    """Wait until ``cond`` holds or the injected crash happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not cond() and not fio.crashed:
        if loop.time() > deadline:
            raise AssertionError("the scenario did not finish")
        await asyncio.sleep(0.002)


def close_quietly(*stores: QueueStore) -> None:
    for store in stores:
        try:
            store.close()
        except Crash:  # (halted: nothing raises; kept for a crash inside close itself)
            pass


async def commit(run: Run, queue: QueueStore, i: int, rcpt: Address, *, fast: bool | None) -> QueueRecord:
    w = queue.new_body()
    data = body(i)
    run.expected[w.id] = data
    run.to[w.id] = rcpt
    w.write(data)
    rec = await queue.commit(w, envelope(rcpt), rcpts(rcpt), fast=fast)
    run.acked.add(rec.id)
    return rec


def run_loop(run: Run, main: Callable[[], object]) -> None:
    def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if not isinstance(context.get("exception"), Crash):  # tasks that died in the crash
            loop.default_exception_handler(context)

    async def go() -> None:
        asyncio.get_running_loop().set_exception_handler(quiet)
        try:
            await asyncio.wait_for(main(), WAIT)  # type: ignore[arg-type]
        except Crash:
            pass
        if run.fio.crashed:
            run.fio.halt()  # the process is dead: let it shut down without touching the disk

    asyncio.run(go())


def enqueue(journal: bool) -> Scenario:
    def scenario(run: Run) -> None:
        queue = QueueStore(run.data / "queue", FakeClock(), journal=journal, io=run.fio)

        async def main() -> None:
            if queue.journal is not None and queue.journal.spare is not None:
                await asyncio.wrap_future(queue.journal.spare)  # the first segment is made ahead
            run.mark()
            for i, rcpt in enumerate((BOB, CAROL)):
                await commit(run, queue, i, rcpt, fast=journal)

        try:
            run_loop(run, main)
        finally:
            close_quietly(queue)
    return scenario


def deliver_from_queue(run: Run) -> None:
    """Local delivery of queued mail and its removal from the queue (the queue manager's road)."""
    queue = QueueStore(run.data / "queue", FakeClock(), io=run.fio)
    mail = MaildirStore(run.data / "mail", "mx.example.net", commits=queue.commits)

    async def main() -> None:
        records = [await commit(run, queue, i, rcpt, fast=False) for i, rcpt in enumerate((BOB, CAROL))]
        run.mark()
        qm = manager(queue, mail)
        for rec in records:
            qm.submit(rec)
        qm.start()
        try:
            await until(lambda: all(not (queue.root / "active" / r.id).exists() for r in records), run.fio)
        finally:
            await qm.stop(grace=0)

    try:
        run_loop(run, main)
    finally:
        close_quietly(queue)


def deliver_fast(flush: str) -> Scenario:
    """Local delivery of journaled mail from memory (the fast lane), done entries included."""
    def scenario(run: Run) -> None:
        queue = QueueStore(run.data / "queue", FakeClock(), journal=True, flush=flush, io=run.fio)
        mail = MaildirStore(run.data / "mail", "mx.example.net", commits=queue.commits)

        async def finish(record: QueueRecord, results: object) -> None:
            raise AssertionError(f"{record.id} was not delivered in the lane: {results}")

        def submit(record: QueueRecord) -> None:
            raise AssertionError(f"{record.id} was spilled")

        async def main() -> None:
            assert queue.journal is not None and queue.journal.spare is not None
            await asyncio.wrap_future(queue.journal.spare)
            records = [await commit(run, queue, i, rcpt, fast=True) for i, rcpt in enumerate((BOB, CAROL))]
            run.mark()
            agent = FastLocalDelivery(mail, Directory(), queue.commits, None)
            lane = JournalLane(queue, agent, Directory(), FakeClock(), finish=finish, submit=submit)
            for n, rec in enumerate(records, 1):
                lane.take(rec)
                await until(lambda: lane.delivered + lane.spilled == n, run.fio)
                if run.fio.crashed:
                    return
            await queue.journal.sync()  # the done entries

        try:
            run_loop(run, main)
        finally:
            close_quietly(queue)
    return scenario


class NextHop:
    """The relay's next hop, outside the machine: what it accepted survives our crash."""

    def __init__(self, got: set[str], defer: bool = False) -> None:
        self.got = got
        self.defer = defer
        self.from_memory: set[str] = set()  # relayed from the journal commit's memory

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        if self.defer:
            return [RelayResult(r, "deferred", Reply(451, "4.4.1", "try later"), "mx.example.com")
                    for r in job.recipients]
        assert isinstance(job, RelayJob)
        with job.body.open() as body:
            assert body.read(), "an empty body"
        if job.body.in_memory() is not None:
            self.from_memory.add(job.queue_id)
        self.got.add(job.queue_id)
        return [RelayResult(r, "delivered", Reply(250, "2.0.0", "ok"), "mx.example.com") for r in job.recipients]


def relay_manager(queue: QueueStore, mail: MaildirStore, hop: NextHop, later: float = 0.0) -> QueueManager:
    local = LocalDelivery(mail, Directory(), "mx.example.net")
    clock = FakeClock(FakeClock().now() + later)
    return QueueManager(queue, local, hop, Directory(), lambda: CONFIG, clock, NoBounces(), concurrency=1)


def deliver_relay(defer: bool) -> Scenario:
    """Relay mail committed to the journal by the queue's own decision and relayed from memory
    (the fast road with the relay agent, done entries included); with ``defer``, the next hop defers it and the lane
    spills it into the queue files, where the queue manager records the attempt."""
    def scenario(run: Run) -> None:
        queue = QueueStore(run.data / "queue", FakeClock(), journal=True, io=run.fio,
                           local_domain=Directory().is_local_domain, relay_journal=True)
        mail = MaildirStore(run.data / "mail", "mx.example.net", commits=queue.commits)
        hop = NextHop(run.relayed, defer)
        qm = relay_manager(queue, mail, hop)

        async def main() -> None:
            assert queue.journal is not None and queue.journal.spare is not None
            await asyncio.wrap_future(queue.journal.spare)
            records = [await commit(run, queue, i, rcpt, fast=None) for i, rcpt in enumerate((DAN, ERIN))]
            assert all(queue.in_journal(r.id) for r in records), "relay mail did not take the journal"
            run.mark()
            async def finish(record: QueueRecord, results: list[tuple[RcptState, RecipientResult]]) -> None:
                # The done entry is written by the journal's thread with its next flush; waiting
                # for it fixes one order of the steps (the same on every run: stable test ids).
                assert queue.journal is not None
                await queue.journal.sync()
                await qm.complete(record, results)

            fast = FastLocalDelivery(mail, Directory(), queue.commits, None)
            lane = JournalLane(queue, fast, Directory(), FakeClock(), finish=finish, submit=qm.submit,
                               relay=hop)
            for rec in records:
                lane.take(rec)
                await asyncio.wait_for(lane.wait_idle(), WAIT)
                if run.fio.crashed:
                    return
            await queue.journal.sync()  # the done entries
            if not defer:
                assert hop.from_memory == {r.id for r in records}, "not relayed from memory"

        try:
            run_loop(run, main)
        finally:
            close_quietly(queue)
    return scenario


def recover_after_stop(run: Run) -> None:
    """Start-up recovery of a queue a server left (``stopped_server``, written before the
    model's baseline): journaled mail, queue files, leftovers."""
    queue = QueueStore(run.data / "queue", FakeClock(), journal=True, io=run.fio)

    async def main() -> None:
        run.mark()
        await asyncio.get_running_loop().run_in_executor(None, queue.recover)

    try:
        run_loop(run, main)
    finally:
        close_quietly(queue)


def stopped_server(data: Path, run: Run) -> None:
    """What a server leaves when it stops with mail in its journal and in the queue files,
    plus the leftovers of receives cut short (queue.recovery rules 1 and 5)."""
    queue = QueueStore(data / "queue", FakeClock(), journal=True, io=NoFlushIO())  # the model's baseline
    # comes after it: what it leaves counts as on disk, whatever the device did

    async def main() -> None:
        assert queue.journal is not None and queue.journal.spare is not None
        await asyncio.wrap_future(queue.journal.spare)
        await commit(run, queue, 0, BOB, fast=True)
        await commit(run, queue, 1, CAROL, fast=True)
        await commit(run, queue, 2, BOB, fast=False)
        w = queue.new_body()  # a receive cut short: a body in tmp/
        w.write(b"never committed")

    try:
        asyncio.run(main())
    finally:
        queue.close()
    (data / "queue" / "msg" / "0000000000000000").write_bytes(b"an orphan body")


SCENARIOS: dict[str, Scenario] = {
    "enqueue-files": enqueue(journal=False),
    "enqueue-journal": enqueue(journal=True),
    "deliver-queue": deliver_from_queue,
    "deliver-fastlane-file": deliver_fast("file"),
    "deliver-fastlane-syncfs": deliver_fast("filesystem"),
    "recover": recover_after_stop,
    "deliver-relaylane": deliver_relay(defer=False),
    "deliver-relaylane-deferred": deliver_relay(defer=True),
}


SEGMENT = 1 << 20  # the journal's segments here: small, so that each crash image is cheap


@contextmanager
def small_segments() -> Iterator[None]:
    defaults = Journal.__init__.__kwdefaults__
    assert defaults is not None
    saved = defaults["segment_bytes"]
    defaults["segment_bytes"] = SEGMENT
    try:
        yield
    finally:
        defaults["segment_bytes"] = saved


def execute(name: str, base: Path, step: Step | None) -> Run:
    """Run scenario ``name`` in ``base``, with a crash at ``step`` (None or END: without)."""
    with small_segments():
        return _execute(name, base, step)


def _execute(name: str, base: Path, step: Step | None) -> Run:
    data = base / "data"
    data.mkdir(parents=True)
    before = Run(data, FaultyIO())
    if name == "recover":
        stopped_server(data, before)
    # The model's baseline is now; the model, not the device, says what is durable.
    fio = FaultyIO(NoFlushIO(), root=data, ignore_threads=(SPARE_THREAD,))
    if step is not None and step is not END:
        fio.crash(step.op, nth=step.nth)
    run = Run(data, fio, before.expected, before.to, before.acked)
    SCENARIOS[name](run)
    return run


# -- the steps (found once, at collection) ------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    op: str
    nth: int  # which call of ``op`` (from the start of the run)
    where: str  # for the test id

    def __str__(self) -> str:
        return f"{self.op}#{self.nth}-{self.where}"


END = Step("end", 0, "after")  # no crash: power lost right after the scenario finished


def _place(where: str, data: str) -> str:
    """A stable name for where a call went (the last of a rename's two paths), relative to the
    data directory, with queue ids and Maildir file names replaced."""
    path = where.split(" -> ")[-1].replace(data, "").strip("/")
    parts = []
    for p in path.split("/")[-3:]:
        if is_queue_id(p[:16]):
            p = "ID" + re.sub(r"^\.[0-9a-f]{8}\.upd$", ".RAND.upd", p[16:])  # an update's random name
        elif re.match(r"^\d+\.M", p):
            p = "MSG"
        elif p.startswith("free."):
            p = "free"
        parts.append(p)
    return "/".join(parts) or "data"


def steps_of(name: str) -> list[Step]:
    with tempfile.TemporaryDirectory(prefix="pigeon-crash-steps-") as tmp:
        run = execute(name, Path(tmp), None)
        counts: dict[str, int] = {}
        found = []
        for i, (op, where) in enumerate(run.fio.trace):
            counts[op] = counts.get(op, 0) + 1
            if i >= run.start and op in MUTATING:
                found.append(Step(op, counts[op], _place(where, str(run.data))))
        return [*found, END]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name in SCENARIOS:
        arg = name.replace("-", "_") + "_step"
        if arg in metafunc.fixturenames:
            if name == "deliver-fastlane-syncfs" and not syncfs_reports_errors():
                metafunc.parametrize(arg, [END], ids=["no-syncfs-here"])
                continue
            steps = steps_of(name)
            metafunc.parametrize(arg, steps, ids=[f"{i:02d}-{s}" for i, s in enumerate(steps)])


def crash_at(name: str, step: Step, tmp_path: Path) -> tuple[Run, list[Path]]:
    run = execute(name, tmp_path, step)
    if step is not END:
        assert run.fio.crashed, f"the crash at {step} did not happen (the steps changed?)"
    return run, run.fio.crash_images(tmp_path / "images")


# -- what a crash may leave, checked ------------------------------------------------------------------

def recovered(image: Path, run: Run) -> dict[str, QueueRecord]:
    """A fresh recovery of the image; every message it finds is whole (nothing half there)."""
    queue = QueueStore(image / "queue", FakeClock())
    try:
        report = queue.recover()
        assert report.corrupt == [] and os.listdir(queue.root / "corrupt") == [], "half a message"
        found: dict[str, QueueRecord] = {}
        for state in ("active", "deferred", "hold"):
            names = os.listdir(queue.root / state)
            records = list(queue.scan((state,)))
            assert len(records) == len(names), f"an unreadable record in {state}/"
            for rec in records:
                assert rec.id in run.expected, f"{rec.id}: a message nobody sent"
                assert queue.body_path(rec.id).read_bytes() == run.expected[rec.id], f"{rec.id}: body not whole"
                assert [r.address for r in rec.rcpts] == [run.to[rec.id]]
                found[rec.id] = rec
        assert os.listdir(queue.root / "tmp") == []
        return found
    finally:
        queue.close()


def delivered(image: Path, run: Run) -> set[str]:
    """The messages whole in a Maildir of the image; a file there that is not one is a failure."""
    wanted = {in_maildir(run.to[q], data): q for q, data in run.expected.items()}
    out = set()
    for user in ("bob", "carol"):
        for sub in ("new", "cur"):
            d = image / "mail" / "example.net" / user / sub
            for name in (os.listdir(d) if d.is_dir() else []):
                content = (d / name).read_bytes()
                assert content in wanted, f"{sub}/{name} is not a whole message: {content[:60]!r}"
                out.add(wanted[content])
    return out


def rerun(image: Path, run: Run) -> set[str]:
    """The queue manager over the recovered queue (a restart); what is in the Maildirs after."""
    queue = QueueStore(image / "queue", FakeClock())
    mail = MaildirStore(image / "mail", "mx.example.net", commits=queue.commits)
    try:
        async def main() -> None:
            qm = manager(queue, mail)
            qm.schedule_existing()
            qm.start()
            await asyncio.wait_for(qm.wait_idle(), WAIT)
            await qm.stop(grace=0)

        asyncio.run(main())
        assert all(os.listdir(queue.root / s) == [] for s in ("active", "deferred")), "left in the queue"
    finally:
        queue.close()
    return delivered(image, run)


# A restart this many seconds later: every retry deferred by the crashed run is due (the first
# step of the default retry schedule is shorter), no delay warning yet (4 h by default).
RETRY_DUE = 3600.0


def rerun_relay(image: Path, run: Run) -> set[str]:
    """A restart over the recovered queue an hour later, the next hop accepting now (``pigeon
    queue flush`` for what waits in deferred/); what the next hop got, before the crash or now."""
    queue = QueueStore(image / "queue", FakeClock())
    mail = MaildirStore(image / "mail", "mx.example.net", commits=queue.commits)
    got = set(run.relayed)
    try:
        async def main() -> None:
            qm = relay_manager(queue, mail, NextHop(got), later=RETRY_DUE)
            qm.schedule_existing()
            qm.flush()
            qm.start()
            await asyncio.wait_for(qm.wait_idle(), WAIT)
            await qm.stop(grace=0)

        asyncio.run(main())
        assert all(os.listdir(queue.root / s) == [] for s in ("active", "deferred")), "left in the queue"
    finally:
        queue.close()
    return got


def check_relay(name: str, step: Step, tmp_path: Path) -> None:
    run, images = crash_at(name, step, tmp_path)
    assert len(run.acked) == 2 and images
    for image in images:
        queued = recovered(image, run).keys()
        lost = run.acked - queued - run.relayed
        assert not lost, f"{image.name}: acknowledged, neither queued nor relayed: {sorted(lost)}"
        missing = run.acked - rerun_relay(image, run)
        assert not missing, f"{image.name}: not relayed after the restart: {sorted(missing)}"


def check_enqueue(name: str, step: Step, tmp_path: Path) -> None:
    run, images = crash_at(name, step, tmp_path)
    assert images
    for image in images:
        found = recovered(image, run)
        lost = run.acked - found.keys()
        assert not lost, f"{image.name}: acknowledged and lost: {sorted(lost)}"


def check_deliver(name: str, step: Step, tmp_path: Path) -> None:
    run, images = crash_at(name, step, tmp_path)
    assert len(run.acked) == 2 and images
    for image in images:
        queued = recovered(image, run).keys()
        lost = run.acked - queued - delivered(image, run)
        assert not lost, f"{image.name}: acknowledged, neither queued nor delivered: {sorted(lost)}"
        missing = run.acked - rerun(image, run)
        assert not missing, f"{image.name}: not delivered by the restarted queue manager: {sorted(missing)}"


# -- the tests ----------------------------------------------------------------------------------------------

def test_enqueue_files(enqueue_files_step: Step, tmp_path: Path) -> None:
    check_enqueue("enqueue-files", enqueue_files_step, tmp_path)


def test_enqueue_journal(enqueue_journal_step: Step, tmp_path: Path) -> None:
    check_enqueue("enqueue-journal", enqueue_journal_step, tmp_path)


def test_deliver_queue(deliver_queue_step: Step, tmp_path: Path) -> None:
    check_deliver("deliver-queue", deliver_queue_step, tmp_path)


def test_deliver_fastlane_file(deliver_fastlane_file_step: Step, tmp_path: Path) -> None:
    check_deliver("deliver-fastlane-file", deliver_fastlane_file_step, tmp_path)


def test_deliver_fastlane_syncfs(deliver_fastlane_syncfs_step: Step, tmp_path: Path) -> None:
    check_deliver("deliver-fastlane-syncfs", deliver_fastlane_syncfs_step, tmp_path)


def test_recover(recover_step: Step, tmp_path: Path) -> None:
    run, images = crash_at("recover", recover_step, tmp_path)
    assert len(run.acked) == 3 and images
    for image in images:
        found = recovered(image, run)  # the second start's recovery, after the first one crashed
        lost = run.acked - found.keys()
        assert not lost, f"{image.name}: acknowledged and lost: {sorted(lost)}"
        assert not list((image / "queue" / "journal").rglob("seg.*")), "the journal was not drained"


def test_deliver_relaylane(deliver_relaylane_step: Step, tmp_path: Path) -> None:
    check_relay("deliver-relaylane", deliver_relaylane_step, tmp_path)


def test_deliver_relaylane_deferred(deliver_relaylane_deferred_step: Step, tmp_path: Path) -> None:
    check_relay("deliver-relaylane-deferred", deliver_relaylane_deferred_step, tmp_path)


def test_every_scenario_has_steps() -> None:
    """The parametrization above is not empty by accident (a scenario that crashed at once)."""
    for name in SCENARIOS:
        if name == "deliver-fastlane-syncfs" and not syncfs_reports_errors():
            continue
        steps = steps_of(name)
        assert len(steps) > 4, (name, steps)
