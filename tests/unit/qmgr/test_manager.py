"""The queue manager (pigeon.qmgr.manager) on a real file-system queue, with scripted delivery
agents, a recording bouncer and a FakeClock: which agent it chooses, how it applies each
recipient's result (done, deferral, bounce), the retry back-off and expiry."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from pigeon.clocks import FakeClock
from pigeon.config import Config, QueueConfig
from pigeon.config.loader import parse_config
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult, Status
from pigeon.delivery.base import DeliveryJob
from pigeon.delivery.relay import RelayJob
from pigeon.proto.smtp.reply import Reply
from pigeon.qmgr.manager import C451_AGENT_CRASHED, MessageBusy, QueueManager, transport
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import FileQueueStore

T = TypeVar("T")
WAIT = 5.0  # seconds; each wait normally takes milliseconds (a timer step: up to 1 s)
ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")  # example.net is local
CAROL = Address("carol", "example.net")
ERIN = Address("erin", "elsewhere.example")
BODY = b"From: alice@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
R250 = Reply(250, "2.0.0", "ok")
R451 = Reply(451, "4.4.1", "try later")
R550 = Reply(550, "5.1.1", "no such user")
SCHEDULE = (60.0, 600.0, 3600.0)
LIFETIME = 4 * 3600.0
DELAY_WARNING = 2 * 3600.0


class Domains:
    def is_local_domain(self, domain: str) -> bool:
        return domain == "example.net"


@dataclass
class Agent:
    """A delivery agent that answers from a script: one status per recipient key (default
    delivered); ``crash`` raises; ``short`` returns one result too few."""

    name: str
    script: dict[str, Status] = field(default_factory=dict)
    jobs: list[DeliveryJob] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    memory: list[bool] = field(default_factory=list)  # each job's body was in memory
    crash: bool = False
    short: bool = False

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        self.jobs.append(job)
        self.memory.append(job.body.in_memory() is not None)
        self.bodies.append(await job.body.read())
        if self.crash:
            raise RuntimeError("agent bug")
        out = []
        for rcpt in job.recipients:
            status = self.script.get(rcpt.key, "delivered")
            reply = {"delivered": R250, "deferred": R451, "failed": R550}[status]
            out.append(RecipientResult(rcpt, status, reply, self.name))
        return out[:-1] if self.short else out


@dataclass
class Bouncer:
    bounced: list[tuple[QueueId, list[Address], list[str]]] = field(default_factory=list)
    delayed: list[tuple[QueueId, list[Address]]] = field(default_factory=list)
    succeeded: list[tuple[QueueId, list[Address], str]] = field(default_factory=list)

    async def bounce(self, record: QueueRecord, failed: Sequence[RcptState]) -> None:
        self.bounced.append((record.id, [r.address for r in failed], [r.last_reply for r in failed]))

    async def delay_warning(self, record: QueueRecord, delayed: Sequence[RcptState]) -> None:
        self.delayed.append((record.id, [r.address for r in delayed]))

    async def success(self, record: QueueRecord, relayed: Sequence[RcptState], action: str) -> None:
        self.succeeded.append((record.id, [r.address for r in relayed], action))


@dataclass
class Rig:
    queue: FileQueueStore
    clock: FakeClock
    local: Agent
    relay: Agent
    fast: Agent
    bouncer: Bouncer
    config: Config

    def manager(self) -> QueueManager:
        return QueueManager(self.queue, self.local, self.relay, Domains(), lambda: self.config, self.clock,
                            self.bouncer, concurrency=2, fast=self.fast)

    def files(self, sub: str) -> list[str]:
        return sorted(os.listdir(self.queue.root / sub))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = FakeClock()
    queue = FileQueueStore(tmp_path / "queue", clock, journal=True, flush="file",
                           local_domain=Domains().is_local_domain)
    base = parse_config('hostname = "mx.example.net"\ndata_dir = "data"\n', "test.toml", tmp_path)
    config = dataclasses.replace(base, queue=QueueConfig(retry_schedule=SCHEDULE, max_lifetime=LIFETIME,
                                                         delay_warning=DELAY_WARNING, jitter=0.0))
    yield Rig(queue, clock, Agent("local"), Agent("relay"), Agent("fast"), Bouncer(), config)
    queue.close()


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(factory(), WAIT * 2)
    return asyncio.run(main())


async def commit(rig: Rig, *rcpts: Address, fast: bool = False, notify: tuple[str, ...] = ("FAILURE",)) -> QueueRecord:
    body = rig.queue.new_body()
    body.write(BODY)
    env = Envelope(sender=ALICE, recipients=[Recipient(r, notify) for r in rcpts], body="8BITMIME",
                   client=ClientInfo("192.0.2.1", "mx.example.org", "ESMTP", None, None))
    states = [RcptState(r, r, notify) for r in rcpts]
    return await rig.queue.commit(body, env, states, fast=fast)


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def deliver_once(rig: Rig, qm: QueueManager, *rcpts: Address, fast: bool = False) -> QueueRecord:
    record = await commit(rig, *rcpts, fast=fast)
    qm.submit(record)
    await qm.wait_idle()
    return record


def with_manager(rig: Rig, body: Callable[[QueueManager], Awaitable[T]]) -> T:
    async def go() -> T:
        qm = rig.manager()
        qm.start()
        try:
            return await body(qm)
        finally:
            await qm.stop(grace=1.0)
    return run(go)


# -- choosing the agent (rules 2 and 7) ----------------------------------------------------------

def test_transport_table() -> None:
    assert transport(True, True) == "fastlane"  # local mail on the fast road: the fast agent
    assert transport(True, False) == transport(False, False) == "relay"  # from memory or from a file
    assert transport(False, True) == "local"


def test_local_and_remote_recipients_go_to_their_agent_in_one_job_each(rig: Rig) -> None:
    async def body(qm: QueueManager) -> QueueRecord:
        return await deliver_once(rig, qm, BOB, ERIN, CAROL)

    record = with_manager(rig, body)
    [local_job] = rig.local.jobs
    [relay_job] = rig.relay.jobs
    assert local_job.recipients == (BOB, CAROL) and relay_job.recipients == (ERIN,)
    assert local_job.queue_id == relay_job.queue_id == record.id
    assert rig.local.bodies == rig.relay.bodies == [BODY]  # read from the queue files
    assert rig.fast.jobs == []
    assert rig.files("active") == [] and rig.files("msg") == []  # all final: removed


def test_a_journaled_message_goes_to_the_fast_agent_and_never_to_the_queue_files(rig: Rig) -> None:
    async def body(qm: QueueManager) -> QueueRecord:
        record = await commit(rig, BOB, CAROL, fast=True)
        assert rig.queue.in_journal(record.id)
        qm.submit(record)
        await qm.wait_idle()
        return record

    record = with_manager(rig, body)
    [job] = rig.fast.jobs
    assert job.recipients == (BOB, CAROL) and rig.fast.bodies == [BODY]  # from memory
    assert rig.local.jobs == [] and rig.relay.jobs == []
    assert not rig.queue.in_journal(record.id)  # its done entry: delivered
    for sub in ("active", "deferred", "msg"):
        assert rig.files(sub) == [], sub


def test_a_fast_attempt_that_defers_is_applied_like_any_other(rig: Rig) -> None:
    rig.fast.script = {CAROL.key: "deferred"}

    async def body(qm: QueueManager) -> QueueRecord:
        record = await commit(rig, BOB, CAROL, fast=True)
        qm.submit(record)
        await qm.wait_idle()
        return rig.queue.load(record.id)

    back = with_manager(rig, body)
    assert back.state == "deferred" and not rig.queue.in_journal(back.id)
    assert [(r.address, r.status) for r in back.rcpts] == [(BOB, "delivered"), (CAROL, "deferred")]
    carol = back.rcpts[1]
    assert carol.next_try == rig.clock.now() + SCHEDULE[0] and carol.last_reply == str(R451)
    assert rig.queue.body_path(back.id).read_bytes() == BODY  # spilled into the queue files


def test_journaled_relay_mail_goes_to_the_relay_agent_from_memory(rig: Rig) -> None:
    """Rule 7: the fast road gives relay mail to the relay agent (the manager's own), with the
    DSN parameters of a RelayJob and its body in memory; delivered, it never touches the files."""
    async def body(qm: QueueManager) -> QueueRecord:
        record = await commit(rig, ERIN, fast=True)
        assert rig.queue.in_journal(record.id)
        qm.submit(record)
        await qm.wait_idle()
        return record

    record = with_manager(rig, body)
    [job] = rig.relay.jobs
    assert isinstance(job, RelayJob) and job.recipients == (ERIN,) and job.originals == (ERIN,)
    assert [p.notify for p in job.params] == [("FAILURE",)] and job.envelope is not None
    assert rig.relay.memory == [True] and rig.relay.bodies == [BODY]
    assert rig.fast.jobs == [] and rig.local.jobs == []
    assert not rig.queue.in_journal(record.id)  # its done entry
    for sub in ("active", "deferred", "msg"):
        assert rig.files(sub) == [], sub


def test_journaled_relay_mail_the_next_hop_defers_is_spilled_and_retried(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}

    async def body(qm: QueueManager) -> QueueRecord:
        record = await commit(rig, ERIN, fast=True)
        qm.submit(record)
        await qm.wait_idle()
        return rig.queue.load(record.id)

    back = with_manager(rig, body)
    assert back.state == "deferred" and not rig.queue.in_journal(back.id)
    assert back.rcpts[0].next_try == rig.clock.now() + SCHEDULE[0] and back.rcpts[0].last_reply == str(R451)
    assert rig.queue.body_path(back.id).read_bytes() == BODY


@pytest.mark.parametrize("case", ["notify-success", "mixed"])
def test_journaled_mail_the_fast_road_cannot_give_one_agent_is_spilled_untried(rig: Rig, case: str) -> None:
    """Rule 7 (qmgr.lane): NOTIFY=SUCCESS relay mail, and mail with local and remote recipients
    (the queue never journals it; forced here), go to the queue files untried; the manager's
    workers deliver them from there, each recipient to its agent."""
    async def body(qm: QueueManager) -> QueueRecord:
        if case == "mixed":
            record = await commit(rig, BOB, ERIN, fast=True)
        else:
            record = await commit(rig, ERIN, fast=True, notify=("SUCCESS",))
        assert rig.queue.in_journal(record.id)
        qm.submit(record)
        await qm.wait_idle()
        return record

    record = with_manager(rig, body)
    [job] = rig.relay.jobs
    assert job.recipients == (ERIN,) and rig.relay.memory == [False]  # from the queue files
    assert rig.fast.jobs == []
    assert [j.recipients for j in rig.local.jobs] == ([(BOB,)] if case == "mixed" else [])
    if case == "notify-success":
        assert rig.bouncer.succeeded == [(record.id, [ERIN], "delivered")]
    assert not rig.queue.in_journal(record.id) and rig.files("active") == [] and rig.files("msg") == []


def test_the_fast_road_counts_messages_in_flight_per_agent(rig: Rig) -> None:
    """Rule 3 (qmgr.lane): a slow next hop fills the relay agent's share of the road; relay mail
    past it waits in the queue files, and local mail still takes the fast agent."""
    gate = asyncio.Event()
    relay_deliver = rig.relay.deliver

    async def slow(job: DeliveryJob) -> list[RecipientResult]:
        if job.body.in_memory() is not None:
            await gate.wait()
        return await relay_deliver(job)

    rig.relay.deliver = slow  # type: ignore[method-assign]

    async def body(qm: QueueManager) -> list[QueueRecord]:
        assert qm.lane is not None
        qm.lane.max_inflight = 1
        first, second = await commit(rig, ERIN, fast=True), await commit(rig, ERIN, fast=True)
        local = await commit(rig, BOB, fast=True)
        for record in (first, second, local):
            qm.submit(record)
        async with asyncio.timeout(WAIT):
            while len(rig.fast.jobs) < 1 or len(rig.relay.jobs) < 1:
                await asyncio.sleep(0.01)
        gate.set()
        await qm.wait_idle()
        return [first, second, local]

    first, second, local = with_manager(rig, body)
    assert [j.queue_id for j in rig.fast.jobs] == [local.id]  # not crowded off by the relay
    assert sorted(rig.relay.memory) == [False, True]  # the second from the queue files
    assert {j.queue_id for j in rig.relay.jobs} == {first.id, second.id}
    for sub in ("active", "deferred", "msg"):
        assert rig.files(sub) == [], sub


# -- applying results (rules 3, 5, 6) ------------------------------------------------------------

def test_a_failed_recipient_is_bounced_and_the_message_removed(rig: Rig) -> None:
    rig.local.script = {BOB.key: "failed"}

    async def body(qm: QueueManager) -> QueueRecord:
        return await deliver_once(rig, qm, BOB, CAROL)

    record = with_manager(rig, body)
    assert rig.bouncer.bounced == [(record.id, [BOB], [str(R550)])]
    assert rig.files("active") == [] and rig.files("deferred") == [] and rig.files("msg") == []


def test_an_agent_that_raises_defers_with_451_4_3_0(rig: Rig) -> None:
    rig.local.crash = True

    async def body(qm: QueueManager) -> QueueRecord:
        record = await deliver_once(rig, qm, BOB)
        return rig.queue.load(record.id)

    back = with_manager(rig, body)
    assert back.state == "deferred"
    assert back.rcpts[0].status == "deferred" and back.rcpts[0].last_reply == str(C451_AGENT_CRASHED)
    assert rig.bouncer.bounced == []


def test_an_agent_that_returns_too_few_results_defers_them_all(rig: Rig) -> None:
    rig.local.short = True

    async def body(qm: QueueManager) -> QueueRecord:
        record = await deliver_once(rig, qm, BOB, CAROL)
        return rig.queue.load(record.id)

    back = with_manager(rig, body)
    assert [r.status for r in back.rcpts] == ["deferred", "deferred"]
    assert {r.last_reply for r in back.rcpts} == {str(C451_AGENT_CRASHED)}


def test_success_dsn_asked_for_is_sent_for_a_local_delivery(rig: Rig) -> None:
    async def body(qm: QueueManager) -> QueueRecord:
        record = await commit(rig, BOB, notify=("SUCCESS",))
        qm.submit(record)
        await qm.wait_idle()
        return record

    record = with_manager(rig, body)
    assert rig.bouncer.succeeded == [(record.id, [BOB], "delivered")]


# -- retry and back-off (rule 4) with the FakeClock ----------------------------------------------

def test_deferred_mail_is_retried_on_the_schedule_and_the_last_step_repeats(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}
    start = rig.clock.now()

    async def body(qm: QueueManager) -> list[float]:
        record = await deliver_once(rig, qm, ERIN)
        tries = [rig.queue.load(record.id).rcpts[0].next_try]
        for n in range(2, 5):
            rig.clock.advance(tries[-1] - rig.clock.now())  # due now; the timer picks it up
            await until(lambda: len(rig.relay.jobs) == n, f"attempt {n}")
            await qm.wait_idle()
            tries.append(rig.queue.load(record.id).rcpts[0].next_try)
        return [t - start for t in tries]

    assert with_manager(rig, body) == [60.0, 60.0 + 600.0, 60.0 + 600.0 + 3600.0, 60.0 + 600.0 + 2 * 3600.0]


def test_nothing_is_tried_before_its_time(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}

    async def body(qm: QueueManager) -> int:
        await deliver_once(rig, qm, ERIN)
        rig.clock.advance(SCHEDULE[0] - 1)
        await asyncio.sleep(1.2)  # the timer loop looks at least once a second
        return len(rig.relay.jobs)

    assert with_manager(rig, body) == 1


def test_flush_retries_deferred_mail_now(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}

    async def body(qm: QueueManager) -> int:
        await deliver_once(rig, qm, ERIN)
        rig.relay.script = {}
        assert qm.flush() == 1
        await until(lambda: len(rig.relay.jobs) == 2, "the flushed attempt")
        await qm.wait_idle()
        return len(rig.files("deferred") + rig.files("active"))

    assert with_manager(rig, body) == 0


def test_a_delay_warning_once_past_the_delay(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}

    async def body(qm: QueueManager) -> QueueRecord:
        record = await deliver_once(rig, qm, ERIN)
        assert rig.bouncer.delayed == []
        for n in range(4):  # after 60, 660, 4260, 7860 s: past the 2 h warning on the fourth retry
            assert rig.bouncer.delayed == [], n
            rig.clock.advance(rig.queue.load(record.id).rcpts[0].next_try - rig.clock.now())
            n = len(rig.relay.jobs) + 1
            await until(lambda: len(rig.relay.jobs) == n, "the next attempt")
            await qm.wait_idle()
        return record

    record = with_manager(rig, body)
    assert rig.bouncer.delayed == [(record.id, [ERIN])]
    assert rig.queue.load(record.id).delay_warned


# -- expiry (rule 4) ----------------------------------------------------------------------------

def test_past_the_lifetime_a_deferral_becomes_a_5_4_7_bounce(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}

    async def body(qm: QueueManager) -> QueueRecord:
        record = await deliver_once(rig, qm, ERIN)
        rig.clock.advance(LIFETIME)
        assert qm.flush() == 1
        await until(lambda: len(rig.relay.jobs) == 2, "the last attempt")
        await qm.wait_idle()
        return record

    record = with_manager(rig, body)
    [(qid, failed, replies)] = rig.bouncer.bounced
    assert (qid, failed) == (record.id, [ERIN])
    assert replies[0].startswith("554 5.4.7 ") and str(R451) in replies[0]
    assert rig.files("deferred") == [] and rig.files("msg") == []


# -- hold, admin bounce (rules 1, 5) -------------------------------------------------------------

def test_held_mail_is_never_scheduled(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}

    async def body(qm: QueueManager) -> int:
        record = await deliver_once(rig, qm, ERIN)
        rig.queue.move(record.id, "hold")
        qm.forget(record.id)
        rig.clock.advance(SCHEDULE[0] * 10)
        await asyncio.sleep(1.2)
        return qm.schedule_existing()

    assert with_manager(rig, body) == 0
    assert len(rig.relay.jobs) == 1 and len(rig.files("hold")) == 1


def test_admin_bounce_fails_what_is_left_and_refuses_a_message_in_the_fast_road(rig: Rig) -> None:
    rig.relay.script = {ERIN.key: "deferred"}
    gate = asyncio.Event()

    async def slow(job: DeliveryJob) -> list[RecipientResult]:
        await gate.wait()
        return [RecipientResult(r, "delivered", R250, "fast") for r in job.recipients]

    async def body(qm: QueueManager) -> tuple[int, QueueRecord]:
        record = await deliver_once(rig, qm, ERIN, BOB)
        n = await qm.bounce_now(record.id)
        rig.fast.deliver = slow  # type: ignore[method-assign]
        busy = await commit(rig, CAROL, fast=True)
        qm.submit(busy)
        with pytest.raises(MessageBusy):
            await qm.bounce_now(busy.id)
        gate.set()
        await qm.wait_idle()
        return n, record

    n, record = with_manager(rig, body)
    assert n == 1
    [(qid, failed, replies)] = rig.bouncer.bounced
    assert (qid, failed) == (record.id, [ERIN]) and replies[0].startswith("550 5.0.0")
    assert rig.files("deferred") == [] and rig.files("active") == []
