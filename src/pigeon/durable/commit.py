"""The group-commit engine: callers ask "make this durable", and concurrent requests share flushes.

Every flush of the project that may be shared runs here (``durable.flushes`` lists the kinds:
file ``fsync``, ``fdatasync``, directory ``fsync``, ``syncfs``). The engine has two doors onto
one core:

* **From the event loop**: ``flush(f)`` returns a future. The requests made while a batch runs
  form the next batch, which the engine's own thread (one per engine) runs, then wakes the
  loop once for the whole batch. This is how the intake journal commits (one ``fdatasync``
  for every message appended since the last) and how the fast lane flushes Maildir files.
* **From a worker thread** that already runs a whole blocking sequence in one call (a queue
  commit, a queue removal, a delivery from the queue into a Maildir): ``flush_blocking(f)``.
  The first thread to ask runs the flush itself; threads that ask while it runs wait for the
  next run, which one of them starts and which covers them all. A commit thus costs one hop
  from the event loop to a thread and back, not one per flush.

Why these two and not one thread pool (docs/benchmarks.md, 2026-11-26 and 2026-11-27): a pool of
32 threads doing one message's writes and flushes per call spent more time handing the GIL
around (about 270 futex calls per message) than writing; on the fast path the writes run on
the loop (page-cache writes of microseconds) and only the flushes go to one thread, one
hand-off each way per batch. The queue files' commit, which creates and fsyncs files, runs as
one worker-thread call, and shares only its directory fsyncs.

Rules:
1. The core: a flush request is satisfied only by a run of its ``key`` that *started after the
   request was made* and has completed. At most one run per key is under way at a time;
   requests made while it runs share the next one, whoever asked (a loop batch or a worker
   thread). Different keys run independently.
2. The outcome of a run reaches every request it satisfies: ``None``, or the exception. An
   ``OSError`` is the expected failure (each caller undoes its own work); any other
   exception is logged and delivered too, so no caller waits forever.
3. ``flush(f)`` (event loop): an idle engine starts its batch at the end of the loop's current
   turn, so requests made in the same turn share it; at most one batch runs at a time, and
   what arrives meanwhile forms the next, started as soon as the first ends. Within a batch,
   kinds run in the order their keys were first requested (a ``Close`` of a descriptor
   requested after its flush runs after it), except that the keys someone waits for now run
   before those only asked for ``within`` a delay (Rule 4), and their waiters are woken as
   soon as they ran: a commit whose ``250`` waits for its ``fdatasync`` does not also wait
   for a Maildir ``syncfs`` that shares its batch. One wake-up of the loop per batch, two
   when a batch holds both. A ``within`` request is thus ordered only against other
   ``within`` requests (nobody needs more: they are flushes of files already safe elsewhere).
4. ``flush(f, within=s)`` is for a flush that may wait a little (the fast lane's Maildir
   files, whose message is safe in the journal meanwhile): it completes with the next batch
   that runs the same key anyway, and starts a batch of its own only if none did within ``s``
   seconds. Under load a request costs a small share of a flush; idle, ``s`` of latency. A
   batch already running when it is asked does not count (its flush may have begun before
   the caller's writes).
5. ``close`` lets the running batch finish, runs what is still pending in the caller's thread,
   and stops the thread for good: a later ``flush`` fails with ``OSError`` (``ESHUTDOWN``).
   ``flush_blocking`` needs no thread and keeps working.
6. A batch belongs to the event loop that started it; a request from another loop (the old
   one closed, as between tests) starts afresh instead of waiting for a wake-up that cannot
   come.
7. The engine's thread runs a little below the loop's priority (``SYNC_THREAD_NICE``): woken
   by the loop for each batch, at equal priority the scheduler often switched to it at once,
   taking the CPU from the loop while the loop held the GIL it then waited for (py-spy: about
   6 % of the loop's time "in" the queue's put). Its work is waiting for the disk.
8. ``whole_fs`` (``[queue] flush = "filesystem"`` where ``syncfs`` reports errors,
   ``flushes.wants_syncfs``) tells callers that may use ``flush_fs`` instead of a flush per
   file and directory; the engine itself runs whatever kind it is given.

What can go wrong: the futures and ``flush_blocking`` carry the ``OSError`` of the flush
(EIO, ENOSPC on some file systems); ``flush_fs`` a failure to open the directory.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import threading
from collections.abc import Hashable
from pathlib import Path

from pigeon.durable.flushes import FileSystems, Flush
from pigeon.durable.io import REAL, FileIO

log = logging.getLogger(__name__)

Batch = dict[Hashable, tuple[Flush, list["asyncio.Future[None]"]]]
Work = tuple[Batch, Batch]  # Rule 3: what someone waits for now, then what may wait
Outcome = list[tuple[list["asyncio.Future[None]"], BaseException | None]]

SYNC_THREAD_NICE = 5  # Rule 7
# Rule 1: failed runs remembered per key so that late waiters still see the error; more than
# this many failures of one key in flight at once is not realistic (each is an I/O error).
_MAX_FAILED = 64
_MAX_COUNTED = 10_000  # ``runs`` forgets everything past this many keys (statistics only)


class _Gate:
    """Rule 1 for one key: generations of runs, and who waits for them. The condition is made
    only when a thread has to wait for a run under way (rare: a gate lives for one run or a few,
    and making one per run cost about 1 % of the CPU per message, docs/benchmarks.md
    "2026-12-07: the CPU regression since 11-27"); it shares the engine's lock."""

    __slots__ = ("cond", "started", "done", "running", "waiters", "failed")

    def __init__(self) -> None:
        self.cond: threading.Condition | None = None
        self.started = 0  # runs started
        self.done = 0  # the last run finished
        self.running = False
        self.waiters = 0
        self.failed: dict[int, BaseException] = {}


class GroupCommit:
    def __init__(self, io: FileIO = REAL, *, name: str = "pigeon-sync", whole_fs: bool = False) -> None:
        self.io = io
        self.whole_fs = whole_fs  # Rule 8
        self._name = name
        self._filesystems = FileSystems(io)
        self._lock = threading.Lock()  # the gates' state (Rule 1)
        self._gates: dict[Hashable, _Gate] = {}
        self._pending: Batch = {}
        self._soon: Batch = {}  # Rule 4: waiting for the next batch that runs their key
        self._lazy: set[Hashable] = set()  # keys in _pending that only ``within`` requests asked for
        self._soon_timer: asyncio.TimerHandle | None = None
        self._running = False
        self._kick_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the running batch
        self._closed = False
        self._queue: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, Work] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0  # loop batches run (tests, benchmarks)
        self.calls = 0  # kinds run by loop batches (one per distinct key per batch)
        self.runs: dict[Hashable, int] = {}  # runs per key, whichever door (tests, benchmarks)

    # -- the core (Rules 1 and 2) ------------------------------------------------------------------

    def flush_blocking(self, flush: Flush) -> None:
        """Make ``flush`` durable from a worker thread; raises what the run raised."""
        exc, ran = self._through_gate(flush)
        if exc is not None:
            if ran or not isinstance(exc, OSError) or exc.errno is None:
                raise exc
            raise OSError(exc.errno, exc.strerror, exc.filename)  # a waiter's own copy

    def _through_gate(self, flush: Flush) -> tuple[BaseException | None, bool]:
        """Rule 1: wait for, or make, a run of ``flush.key`` that starts after this call.
        Returns its outcome and whether this thread ran it."""
        key = flush.key
        with self._lock:
            gate = self._gates.get(key)
            if gate is None:
                gate = self._gates[key] = _Gate()
            gate.waiters += 1
            target = gate.started + 1
            while gate.done < target and gate.running:
                if gate.cond is None:
                    gate.cond = threading.Condition(self._lock)
                gate.cond.wait()
            if gate.done >= target:
                self._leave(key, gate)
                return gate.failed.get(target), False
            gate.running = True
            gate.started += 1
            gen = gate.started  # == target: nothing ran since this caller arrived
            if len(self.runs) >= _MAX_COUNTED:
                self.runs.clear()
            self.runs[key] = self.runs.get(key, 0) + 1
        error: BaseException | None = None
        try:
            flush.run(self.io)
        except OSError as exc:
            error = exc
        except Exception as exc:  # Rule 2
            log.exception("flush %r failed", key)
            error = exc
        except BaseException as exc:  # a test's simulated crash: no caller may wait forever
            error = exc
        with self._lock:
            gate.running = False
            gate.done = gen
            if error is not None:
                if len(gate.failed) >= _MAX_FAILED:
                    gate.failed.pop(min(gate.failed))
                gate.failed[gen] = error
            self._leave(key, gate)
            if gate.cond is not None:
                gate.cond.notify_all()
        return error, True

    def _leave(self, key: Hashable, gate: _Gate) -> None:
        gate.waiters -= 1
        if gate.waiters == 0 and not gate.running and self._gates.get(key) is gate:
            del self._gates[key]  # memory stays bounded by what is in flight

    def runs_of(self, flush: Flush) -> int:
        return self.runs.get(flush.key, 0)

    # -- the event-loop door (Rules 3-6) -----------------------------------------------------------

    def flush(self, flush: Flush, *, within: float | None = None) -> asyncio.Future[None]:
        """A future done once ``flush`` is durable (Rule 3; Rule 4 with ``within``). Call from
        the event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._closed:
            fut.set_exception(OSError(errno.ESHUTDOWN, "the sync thread is closed"))
            return fut
        if self._running and self._loop is not loop:
            # Rule 6: the batch in flight belonged to a loop that is gone (tests run several);
            # its wake-up can never arrive, and its waiters are gone with their loop.
            self._running = False
            self._pending = {}
            self._lazy = set()
            self._soon = {}
            self._soon_timer = None
        key = flush.key
        if within is not None and key not in self._pending:
            entry = self._soon.get(key)
            if entry is None:
                self._soon[key] = (flush, [fut])
            else:
                entry[1].append(fut)
            if self._soon_timer is None:
                self._soon_timer = loop.call_later(within, self._soon_due, loop)
            return fut
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = (flush, [fut])
        else:
            entry[1].append(fut)
            self._lazy.discard(key)  # Rule 3: someone waits for it now
        if not self._running and not self._kick_scheduled:
            # Rule 3: start at the end of this turn of the loop, so that every request made in
            # it (sessions whose data ended in the same read) shares the batch.
            self._kick_scheduled = True
            loop.call_soon(self._kick, loop)
        return fut

    def flush_fs(self, directory: Path, *, within: float | None = None) -> asyncio.Future[None]:
        """One ``syncfs`` of the file system holding ``directory`` (``flushes.FsSync``), shared
        with every request for that file system; a failure to find it fails the future."""
        try:
            if self._closed:
                raise OSError(errno.ESHUTDOWN, "the sync thread is closed")
            fs = self._filesystems.of(directory)
        except OSError as exc:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
            return fut
        return self.flush(fs, within=within)

    def _soon_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Rule 4: nobody else ran these keys in time; they form a batch of their own."""
        self._soon_timer = None
        soon, self._soon = self._soon, {}
        for key, (fn, futs) in soon.items():
            entry = self._pending.get(key)
            if entry is None:
                self._pending[key] = (fn, futs)
                self._lazy.add(key)
            else:
                entry[1].extend(futs)
        if soon and not self._running and not self._kick_scheduled:
            self._kick_scheduled = True
            loop.call_soon(self._kick, loop)

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._kick_scheduled = False
        if not self._running and self._pending and not self._closed:
            self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, {}
        lazy_keys, self._lazy = self._lazy, set()
        if self._soon:  # Rule 4: waiters for a key this batch runs anyway ride along
            for key in self._soon.keys() & batch.keys():
                batch[key][1].extend(self._soon.pop(key)[1])
            if not self._soon and self._soon_timer is not None:
                self._soon_timer.cancel()
                self._soon_timer = None
        self._running = True
        self._loop = loop
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        now: Batch = {}
        lazy: Batch = {}
        for key, entry in batch.items():  # Rule 3: what someone waits for first, order kept
            (lazy if key in lazy_keys else now)[key] = entry
        self._queue.put((loop, (now, lazy)))
        self.batches += 1
        self.calls += len(batch)

    def _serve(self) -> None:
        """The engine's thread: run each batch, then wake the loop once for all of it."""
        _lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, (now, lazy) = item
            outcome = self._run(now)
            if lazy:
                if outcome:  # Rule 3: the waiters of ``now`` need not wait for ``lazy``
                    try:
                        loop.call_soon_threadsafe(_settle_all, outcome)
                    except RuntimeError:
                        pass
                outcome = self._run(lazy)
            try:
                loop.call_soon_threadsafe(self._finished, loop, outcome)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _run(self, batch: Batch) -> Outcome:
        return [(futs, self._through_gate(fl)[0]) for fl, futs in batch.values()]

    def _finished(self, loop: asyncio.AbstractEventLoop, outcome: Outcome) -> None:
        self._running = False
        _settle_all(outcome)
        if self._pending and not self._closed:
            self._start(loop)  # what arrived while this batch ran

    def close(self) -> None:
        """Rule 5: finish the running batch, run what is still pending here, and stop."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._soon_timer is not None:
            self._soon_timer.cancel()
            self._soon_timer = None
        batch, self._pending = self._pending, {}
        self._lazy = set()
        for key, (fl, futs) in self._soon.items():  # Rule 4: nobody else will run them now
            entry = batch.get(key)
            if entry is None:
                batch[key] = (fl, futs)
            else:
                entry[1].extend(futs)
        self._soon = {}
        for futs, exc in self._run(batch):
            for fut in futs:
                if not fut.done() and not fut.get_loop().is_closed():
                    fut.get_loop().call_soon_threadsafe(_settle, fut, exc)
        self._filesystems.close()


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SYNC_THREAD_NICE)
    except (OSError, AttributeError) as exc:  # not Linux (no per-thread nice), or not allowed
        log.debug("sync thread priority unchanged: %s", exc)


def _settle_all(outcome: Outcome) -> None:
    for futs, exc in outcome:
        for fut in futs:
            _settle(fut, exc)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)
