"""The group-commit engine (pigeon.durable.commit): the event-loop door (batches in one thread,
one run per key, errors, order, the ``within`` window), the worker-thread door, and the two
sharing one run."""

from __future__ import annotations

import asyncio
import errno
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path

import pytest

from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import DirSync, wants_syncfs
from pigeon.durable.io import FileIO, syncfs_reports_errors
from pigeon.durable.testing import FaultyIO

WAIT = 5.0  # seconds: a generous bound; every wait below normally takes milliseconds


class Fn:
    """A flush kind for these tests: runs ``fn`` under ``key``."""

    def __init__(self, key: Hashable, fn: Callable[[], object]) -> None:
        self.key = key
        self.fn = fn

    def run(self, io: FileIO) -> None:
        self.fn()


def req(g: GroupCommit, key: Hashable, fn: Callable[[], object]) -> asyncio.Future[None]:
    return g.flush(Fn(key, fn))


@pytest.fixture
def gs() -> Iterator[GroupCommit]:
    g = GroupCommit(name="test-sync")
    yield g
    g.close()


def recorder(log: list[str], name: str) -> Callable[[], None]:
    def fn() -> None:
        log.append(name)
    return fn


async def until(cond: Callable[[], bool]) -> None:
    """Wait (on the loop) until ``cond`` holds; fail after WAIT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


def test_one_request_runs_in_the_thread_and_completes(gs: GroupCommit) -> None:
    threads: list[str] = []

    async def go() -> object:
        fut = req(gs, "k", lambda: threads.append(threading.current_thread().name))
        await asyncio.wait_for(fut, WAIT)
        return fut.result()

    assert asyncio.run(go()) is None
    assert len(threads) == 1 and threads[0].startswith("test-sync")
    assert threads[0] != threading.current_thread().name
    assert (gs.batches, gs.calls) == (1, 1)


def test_requests_made_while_a_batch_runs_form_one_next_batch(gs: GroupCommit) -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        if not release.wait(WAIT):
            raise RuntimeError("never released")
        ran.append("blocker")

    async def go() -> None:
        first = req(gs, "block", blocker)
        await until(started.is_set)  # batch 1 is running in the thread
        later = [req(gs, f"k{i}", recorder(ran, f"k{i}")) for i in range(5)]
        await asyncio.sleep(0.01)
        assert not any(f.done() for f in later)  # they wait for batch 1 to end
        assert ran == [] and gs.batches == 1
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *later), WAIT)

    asyncio.run(go())
    assert ran == ["blocker", "k0", "k1", "k2", "k3", "k4"]
    assert gs.batches == 2  # the five requests made during batch 1 ran as ONE batch
    assert gs.calls == 6


def test_same_key_in_one_batch_runs_once_and_every_waiter_gets_it(gs: GroupCommit) -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    async def go() -> list[object]:
        first = req(gs, "block", blocker)
        await until(started.is_set)
        # Three callers flush the same thing; each passes its own fn, only the first one runs.
        waiters = [req(gs, ("fdatasync", 7), recorder(calls, f"caller{i}")) for i in range(3)]
        release.set()
        return list(await asyncio.wait_for(asyncio.gather(first, *waiters), WAIT))

    results = asyncio.run(go())
    assert results == [None, None, None, None]
    assert calls == ["caller0"]
    assert (gs.batches, gs.calls) == (2, 2)


def test_same_key_in_different_batches_runs_each_time(gs: GroupCommit) -> None:
    calls: list[str] = []

    async def go() -> None:
        await req(gs, "k", recorder(calls, "a"))
        await req(gs, "k", recorder(calls, "b"))

    asyncio.run(go())
    assert calls == ["a", "b"] and gs.batches == 2


def test_oserror_reaches_exactly_the_waiters_of_that_key(gs: GroupCommit) -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    def broken() -> None:
        ran.append("broken")
        raise OSError(errno.EIO, "I/O error")

    async def go() -> list[object]:
        first = req(gs, "block", blocker)
        await until(started.is_set)
        futs = [
            req(gs, "ok1", recorder(ran, "ok1")),
            req(gs, "bad", broken),
            req(gs, "ok2", recorder(ran, "ok2")),
            req(gs, "bad", recorder(ran, "never")),  # a second waiter of the failing key
        ]
        release.set()
        await asyncio.wait_for(first, WAIT)
        return list(await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), WAIT))

    ok1, bad1, ok2, bad2 = asyncio.run(go())
    assert ok1 is None and ok2 is None
    assert isinstance(bad1, OSError) and bad1.errno == errno.EIO
    assert bad2 is bad1  # the same outcome for both waiters of the key
    assert ran == ["ok1", "broken", "ok2"]  # the failure did not stop the rest of the batch


def test_other_exceptions_are_logged_and_set_on_the_futures(gs: GroupCommit, caplog: pytest.LogCaptureFixture) -> None:
    def bug() -> None:
        raise ValueError("a bug")

    async def go() -> BaseException | None:
        fut = req(gs, "k", bug)
        try:
            await asyncio.wait_for(fut, WAIT)
        except ValueError as exc:
            return exc
        return None

    with caplog.at_level("ERROR", logger="pigeon.durable.commit"):
        exc = asyncio.run(go())
    assert isinstance(exc, ValueError)
    assert any("failed" in r.getMessage() for r in caplog.records)


def test_order_within_a_batch_is_first_request_order(gs: GroupCommit) -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    async def go() -> None:
        first = req(gs, "block", blocker)
        await until(started.is_set)
        futs = [
            req(gs, ("fdatasync", 3), recorder(ran, "flush3")),
            req(gs, ("dir", "/q"), recorder(ran, "dir")),
            req(gs, ("close", 3), recorder(ran, "close3")),
            req(gs, ("fdatasync", 3), recorder(ran, "flush3-again")),  # joins the first, keeps its place
            req(gs, ("unlink", "seg"), recorder(ran, "unlink")),
        ]
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *futs), WAIT)

    asyncio.run(go())
    assert ran == ["flush3", "dir", "close3", "unlink"]


def test_what_someone_waits_for_runs_first_and_is_not_held_by_a_within_flush(gs: GroupCommit) -> None:
    """Rule 3: in a batch holding both, the flushes requested without ``within`` (a journal
    commit) run first, and their waiters are woken before the ``within`` ones (a Maildir
    syncfs) run; each class keeps its own request order."""
    started = threading.Event()
    release = threading.Event()
    lazy_running = threading.Event()
    lazy_release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    def slow_lazy() -> None:
        ran.append("lazy1")
        lazy_running.set()
        if not lazy_release.wait(WAIT):
            raise RuntimeError("never released")

    async def go() -> None:
        first = req(gs, "block", blocker)
        await until(started.is_set)  # batch 1 runs; what follows forms batch 2
        lazy = [gs.flush(Fn("lazy1", slow_lazy), within=0.001),
                gs.flush(Fn("lazy2", recorder(ran, "lazy2")), within=0.001)]
        await asyncio.sleep(0.02)  # their wait is over: they join the next batch, first in it
        now = [req(gs, "now1", recorder(ran, "now1")), req(gs, "now2", recorder(ran, "now2"))]
        release.set()
        await asyncio.wait_for(asyncio.gather(first, *now), WAIT)  # while lazy1 still runs
        assert lazy_running.wait(WAIT)
        assert not any(f.done() for f in lazy)
        lazy_release.set()
        await asyncio.wait_for(asyncio.gather(*lazy), WAIT)

    asyncio.run(go())
    assert ran == ["now1", "now2", "lazy1", "lazy2"]
    assert gs.batches == 2


def test_a_within_request_joined_by_a_waiting_one_runs_first(gs: GroupCommit) -> None:
    """Rule 3: once someone waits for a key now, it is no longer a ``within`` flush."""
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    async def go() -> None:
        first = req(gs, "block", blocker)
        await until(started.is_set)
        lazy = gs.flush(Fn("lazy", recorder(ran, "lazy")), within=0.001)
        shared = gs.flush(Fn("shared", recorder(ran, "shared")), within=0.001)
        await asyncio.sleep(0.02)
        now = req(gs, "shared", recorder(ran, "shared-now"))  # joins the pending ``shared``
        release.set()
        await asyncio.wait_for(asyncio.gather(first, lazy, shared, now), WAIT)

    asyncio.run(go())
    assert ran == ["shared", "lazy"]


def test_a_batch_is_one_thread_hop_for_many_callers(gs: GroupCommit) -> None:
    """Without a blocker: requests made in one loop iteration while nothing runs share one
    batch (rule 2); never one batch per caller."""
    async def go() -> None:
        await asyncio.wait_for(asyncio.gather(*(req(gs, i, lambda: None) for i in range(50))), WAIT)

    asyncio.run(go())
    assert gs.calls == 50
    assert gs.batches == 1


def test_close_waits_for_the_running_batch(gs: GroupCommit) -> None:
    started = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def slow() -> None:
        started.set()
        release.wait(WAIT)
        ran.append("slow")

    async def go() -> None:
        fut = req(gs, "slow", slow)
        await until(started.is_set)
        timer = threading.Timer(0.05, release.set)
        timer.start()
        gs.close()  # blocks until the batch ends
        assert ran == ["slow"]
        timer.join()
        await asyncio.wait_for(fut, WAIT)  # the waiter still gets its outcome

    asyncio.run(go())


def test_close_twice_and_without_any_batch_is_fine() -> None:
    g = GroupCommit()
    g.close()
    g.close()
    assert g.batches == 0


def test_close_leaves_no_sync_thread_behind() -> None:
    g = GroupCommit(name="test-sync-final")
    started = threading.Event()
    release = threading.Event()

    def slow() -> None:
        started.set()
        release.wait(WAIT)

    async def go() -> None:
        first = req(g, "slow", slow)
        await until(started.is_set)
        second = req(g, "next", lambda: None)  # queued behind the running batch
        timer = threading.Timer(0.02, release.set)
        timer.start()
        g.close()
        timer.join()
        await asyncio.wait_for(first, WAIT)
        # The waiter of the pending batch must not wait forever (Rule 3): run or failed, but done.
        await asyncio.wait_for(asyncio.gather(second, return_exceptions=True), WAIT)

    try:
        asyncio.run(go())
        alive = [t.name for t in threading.enumerate() if t.name.startswith("test-sync-final")]
        assert alive == []  # Rule 4: close stops the thread
    finally:
        g.close()


def test_a_new_event_loop_can_use_the_group_after_the_old_one_closed(gs: GroupCommit) -> None:
    release = threading.Event()

    async def first_loop() -> None:
        req(gs, "left behind", lambda: release.wait(WAIT))  # not awaited, like the journal's unlinks

    asyncio.run(first_loop())  # the loop closes while its batch still runs
    release.set()

    async def second_loop() -> bool:
        try:
            await asyncio.wait_for(req(gs, "k", lambda: None), 0.3)
        except asyncio.TimeoutError:
            return False
        return True

    ran = asyncio.run(second_loop())
    assert ran


def test_requests_in_one_turn_of_the_loop_share_the_first_batch(gs: GroupCommit) -> None:
    """Rule 2: an idle group waits for the end of the turn, so a burst is one batch."""
    log: list[str] = []

    async def go() -> None:
        futs = [req(gs, ("k", i), recorder(log, f"f{i}")) for i in range(5)]
        await asyncio.gather(*futs)

    asyncio.run(go())
    assert gs.batches == 1 and gs.calls == 5
    assert log == [f"f{i}" for i in range(5)]


# -- syncfs: one per file system and batch (flushes.FsSync) --------------------------------------------

def needs_syncfs() -> None:
    if not syncfs_reports_errors():
        pytest.fail("syncfs with error reporting (Linux >= 5.8) is needed for this test")


@pytest.fixture
def fio() -> FaultyIO:
    return FaultyIO()


def test_flush_fs_requests_for_one_file_system_share_one_syncfs(tmp_path: Path, fio: FaultyIO) -> None:
    needs_syncfs()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    g = GroupCommit(fio, name="test-fs", whole_fs=True)
    try:
        async def go() -> None:
            futs = [g.flush_fs(a), g.flush_fs(b), g.flush_fs(a), req(g, "other", lambda: None)]
            await asyncio.wait_for(asyncio.gather(*futs), WAIT)

        asyncio.run(go())
        assert fio.calls["syncfs"] == 1  # two directories, one file system: one syncfs
        assert fio.calls["fsync"] == 1  # and the fsync of its directory, for the device cache
        assert (g.batches, g.calls) == (1, 2)
    finally:
        g.close()


def test_flush_fs_failures_reach_every_waiter(tmp_path: Path, fio: FaultyIO) -> None:
    needs_syncfs()
    fio.fail("syncfs", error=errno.EIO)
    g = GroupCommit(fio, name="test-fs", whole_fs=True)
    try:
        async def go() -> list[object]:
            futs = [g.flush_fs(tmp_path), g.flush_fs(tmp_path)]
            return list(await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), WAIT))

        outcomes = asyncio.run(go())
        assert all(isinstance(o, OSError) and o.errno == errno.EIO for o in outcomes)
    finally:
        g.close()


def test_flush_fs_on_a_missing_directory_or_after_close_fails_with_oserror(tmp_path: Path) -> None:
    g = GroupCommit(name="test-fs", whole_fs=True)

    async def missing() -> None:
        with pytest.raises(FileNotFoundError):
            await g.flush_fs(tmp_path / "nowhere")

    async def closed() -> None:
        with pytest.raises(OSError) as info:
            await g.flush_fs(tmp_path)
        assert info.value.errno == errno.ESHUTDOWN

    asyncio.run(missing())
    g.close()
    asyncio.run(closed())


def test_the_setting_chooses_syncfs_only_where_it_reports_errors() -> None:
    assert wants_syncfs("file") is False
    assert wants_syncfs("filesystem") is syncfs_reports_errors()


# -- Rule 4: a flush that may wait for the next one ------------------------------------------------

@pytest.fixture
def fs_gs() -> Iterator[GroupCommit]:
    needs_syncfs()
    g = GroupCommit(name="test-fs", whole_fs=True)
    yield g
    g.close()


def test_within_rides_on_the_next_flush_of_that_file_system(fs_gs: GroupCommit, tmp_path: Path) -> None:
    async def go() -> None:
        soon = fs_gs.flush_fs(tmp_path, within=WAIT)
        await asyncio.sleep(0.02)
        assert not soon.done() and fs_gs.batches == 0  # it starts nothing by itself
        await asyncio.wait_for(fs_gs.flush_fs(tmp_path), WAIT)  # somebody else's flush
        assert soon.done() and soon.exception() is None

    asyncio.run(go())
    assert (fs_gs.batches, fs_gs.calls) == (1, 1)


def test_within_alone_gets_a_batch_of_its_own_after_the_wait(fs_gs: GroupCommit, tmp_path: Path) -> None:
    async def go() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.wait_for(asyncio.gather(fs_gs.flush_fs(tmp_path, within=0.05),
                                              fs_gs.flush_fs(tmp_path, within=0.05)), WAIT)
        return loop.time() - t0

    elapsed = asyncio.run(go())
    assert elapsed >= 0.045
    assert (fs_gs.batches, fs_gs.calls) == (1, 1)  # both waiters, one syncfs


def test_within_joins_a_batch_that_has_not_started(fs_gs: GroupCommit, tmp_path: Path) -> None:
    async def go() -> None:
        first = fs_gs.flush_fs(tmp_path)  # pending until the end of this turn
        soon = fs_gs.flush_fs(tmp_path, within=WAIT)
        await asyncio.wait_for(asyncio.gather(first, soon), WAIT)

    asyncio.run(go())
    assert (fs_gs.batches, fs_gs.calls) == (1, 1)


def test_within_does_not_count_the_batch_already_running(fs_gs: GroupCommit, tmp_path: Path) -> None:
    started = threading.Event()
    release = threading.Event()

    def blocker() -> None:
        started.set()
        if not release.wait(WAIT):
            raise RuntimeError("never released")

    async def go() -> None:
        running = req(fs_gs, "block", blocker)
        await until(started.is_set)  # batch 1 runs in the thread
        soon = fs_gs.flush_fs(tmp_path, within=0.05)
        release.set()
        await asyncio.wait_for(running, WAIT)
        assert not soon.done()  # batch 1 may have flushed before the caller's writes
        await asyncio.wait_for(soon, WAIT)  # its own batch, after `within`

    asyncio.run(go())
    assert fs_gs.batches == 2


def test_within_works_for_any_kind(gs: GroupCommit, tmp_path: Path) -> None:
    async def go() -> None:
        soon = gs.flush(DirSync(tmp_path), within=WAIT)
        await asyncio.sleep(0.02)
        assert not soon.done()
        await asyncio.wait_for(gs.flush(DirSync(tmp_path)), WAIT)
        assert soon.done()

    asyncio.run(go())
    assert gs.calls == 1


def test_close_runs_the_flushes_still_waiting(tmp_path: Path, fio: FaultyIO) -> None:
    needs_syncfs()
    g = GroupCommit(fio, name="test-fs", whole_fs=True)

    async def go() -> None:
        fut = g.flush_fs(tmp_path, within=WAIT)
        g.close()
        await asyncio.wait_for(fut, WAIT)

    asyncio.run(go())
    assert fio.calls["syncfs"] == 1


# -- the worker-thread door (Rule 1) ------------------------------------------------------------------

def test_a_thread_arriving_while_a_run_is_under_way_waits_for_the_next(gs: GroupCommit) -> None:
    """Rule 1: a caller arriving while a run is under way waits for the next one, which starts
    after it arrived; all callers that arrived meanwhile share it, and an error of that run
    reaches every one of them."""
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow() -> None:
        calls.append(len(calls))
        started.set()
        release.wait(WAIT)
        if len(calls) == 2:  # the second run fails: every one of its waiters sees the error
            raise OSError(errno.EIO, "I/O error")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            gs.flush_blocking(Fn("dir", slow))
        except OSError as exc:
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    assert started.wait(WAIT)
    later = [threading.Thread(target=call) for _ in range(10)]
    for t in later:
        t.start()
    time.sleep(0.2)  # let them all reach the gate while the first run is under way
    assert calls == [0]  # one run at a time
    release.set()
    for t in [first, *later]:
        t.join(WAIT)
    assert calls == [0, 1] and gs.runs["dir"] == 2
    assert len(errors) == 10 and all(isinstance(e, OSError) and e.errno == errno.EIO for e in errors)
    assert len({id(e) for e in errors}) == 10  # each waiter raises its own copy
    gs.flush_blocking(Fn("dir", lambda: None))  # the next run tries again
    assert gs.runs["dir"] == 3


def test_different_keys_run_at_the_same_time(gs: GroupCommit) -> None:
    inside = threading.Barrier(2, timeout=WAIT)
    threads = [threading.Thread(target=gs.flush_blocking, args=(Fn(k, inside.wait),)) for k in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not inside.broken  # both were inside their run at once


def test_a_thread_and_a_loop_batch_share_one_run(gs: GroupCommit) -> None:
    """Rule 1 across the doors: a worker thread that asks while the loop's batch runs a key
    waits for the next run of it, and a loop request made while a thread runs one joins it
    likewise; the gates forget a key once nobody waits (no state left behind)."""
    started = threading.Event()
    release = threading.Event()
    runs: list[str] = []

    def first() -> None:
        runs.append("first")
        started.set()
        release.wait(WAIT)

    async def go() -> None:
        fut = req(gs, "k", first)
        await until(started.is_set)
        thread = threading.Thread(target=gs.flush_blocking, args=(Fn("k", lambda: runs.append("thread")),))
        thread.start()
        await asyncio.sleep(0.05)
        assert runs == ["first"]
        release.set()
        await asyncio.wait_for(fut, WAIT)
        await asyncio.to_thread(thread.join, WAIT)

    asyncio.run(go())
    assert runs == ["first", "thread"]
    assert gs._gates == {}


def test_a_crash_in_a_run_reaches_its_waiters_and_the_thread_survives(gs: GroupCommit) -> None:
    class Boom(BaseException):
        pass

    def crash() -> None:
        raise Boom()

    async def go() -> None:
        with pytest.raises(Boom):
            await asyncio.wait_for(req(gs, "k", crash), WAIT)
        await asyncio.wait_for(req(gs, "k", lambda: None), WAIT)  # the thread still serves

    asyncio.run(go())
    with pytest.raises(Boom):
        gs.flush_blocking(Fn("x", crash))


def test_flush_blocking_works_after_close(tmp_path: Path) -> None:
    g = GroupCommit()
    g.close()
    g.flush_blocking(DirSync(tmp_path))
    assert g.runs_of(DirSync(tmp_path)) == 1


def test_cancelled_waiter_does_not_cancel_the_batch(gs: GroupCommit, tmp_path: Path) -> None:
    async def go() -> None:
        a = asyncio.ensure_future(gs.flush(DirSync(tmp_path)))
        b = gs.flush(DirSync(tmp_path))
        await asyncio.sleep(0)
        a.cancel()
        await asyncio.wait_for(b, WAIT)  # still completes

    asyncio.run(go())
