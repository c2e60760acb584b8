"""Group commit on one thread: the flushes (fsync, fdatasync) of many callers, run as batches.

The fast path of a message (the intake journal, then the Maildir file) writes its bytes on the
event loop, where a write into the page cache costs microseconds, and waits here only for what
really blocks: the flush to the disk. One thread runs the flushes of everybody who asked while
the previous batch ran, then wakes the loop once for the whole batch.

Why one thread and batches, not a pool and one hop per message: measured on the 2-core VM
(docs/benchmarks.md, 2026-11-27), a pool of 32 threads doing one message's writes and fsyncs
per call spent more time handing the GIL around (≈ 270 futex calls per message) than writing;
with every write on the loop and no thread at all (fsync disabled, an experiment) the same
server did 40 % more messages per second. Here a batch costs one hand-off each way.

Rules:
1. ``sync(key, fn)`` returns a future that completes when ``fn`` has run in the thread (its
   result is ignored; its ``OSError`` is set on the future). Calls with the same ``key`` in one
   batch run ``fn`` once, and every caller gets that outcome: ``key`` names what is flushed
   (``("fdatasync", fd)``, ``("dir", path)``), so a batch flushes each thing once.
2. At most one batch runs at a time; requests that arrive while it runs form the next batch,
   which starts as soon as the first ends. An idle group starts its batch at the end of the
   loop's current turn, so requests made in the same turn share it. Within a batch, functions run in the order their
   keys were first requested (a close queued after a flush of the same fd runs after it).
3. Only ``OSError`` is an expected outcome; any other exception is logged and also set on the
   futures, so no caller waits forever.
4. ``close`` lets the running batch finish, runs whatever is still pending in the caller's
   thread, and stops the thread for good: a later ``sync`` fails with ``OSError``.
6. The thread runs a little below the loop's priority (``SYNC_THREAD_NICE``).
5. A batch belongs to the event loop that started it; a request from another loop (the old one
   closed, as between tests) starts afresh instead of waiting for a wake-up that cannot come.
7. With ``whole_fs`` (``store.fssync``), ``flush_fs(directory)`` asks for one ``syncfs`` of the
   file system holding ``directory``: every request for the same file system in a batch shares
   it, whatever its caller (journal entries, Maildir files, ``new/`` entries), so a batch costs
   one flush per file system. Callers use it instead of fsyncing each file and directory.
8. ``flush_fs_soon(directory, within)`` is for a flush that may wait a little (the fast
   lane's files and ``new/`` entries, whose message is safe in the journal meanwhile): it
   completes with the next batch that flushes that file system anyway, and starts a batch of
   its own only if none started within ``within`` seconds, so every such request of those
   ``within`` seconds shares one flush. Under load a request costs a small share of a flush;
   idle, ``within`` of latency. A batch that is running when it is asked does not count
   (its flush may have begun before the caller's writes).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

from pigeon.store import fssync
from pigeon.store.fssync import FileSystem, FileSystems

log = logging.getLogger(__name__)

Batch = dict[Hashable, tuple[Callable[[], object], list["asyncio.Future[None]"]]]
Outcome = list[tuple[list["asyncio.Future[None]"], BaseException | None]]


class GroupSync:
    def __init__(self, name: str = "pigeon-sync", *, whole_fs: bool = False) -> None:
        self._name = name
        self.whole_fs = whole_fs  # Rule 7
        self._filesystems = FileSystems()
        self._pending: Batch = {}
        self._soon: Batch = {}  # Rule 8: waiting for the next batch that flushes their key
        self._soon_timer: asyncio.TimerHandle | None = None
        self._running = False
        self._kick_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the running batch
        self._closed = False
        self._queue: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, Batch] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = 0  # how many batches ran (tests, benchmarks)
        self.calls = 0  # how many functions ran (one per distinct key per batch)

    def sync(self, key: Hashable, fn: Callable[[], object]) -> asyncio.Future[None]:
        """Run ``fn`` in the next batch (Rule 1); call from the event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._closed:
            fut.set_exception(OSError(errno.ESHUTDOWN, "the sync thread is closed"))
            return fut
        if self._running and self._loop is not loop:
            # Rule 5: the batch in flight belonged to a loop that is gone (tests run several);
            # its wake-up can never arrive, and its waiters are gone with their loop.
            self._running = False
            self._pending = {}
            self._soon = {}
            self._soon_timer = None
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = (fn, [fut])
        else:
            entry[1].append(fut)
        if not self._running and not self._kick_scheduled:
            # Rule 2: start at the end of this turn of the loop, so that every request made in
            # it (sessions whose data ended in the same read) shares the batch.
            self._kick_scheduled = True
            loop.call_soon(self._kick, loop)
        return fut

    def flush_fs(self, directory: Path) -> asyncio.Future[None]:
        """Rule 7: one ``syncfs`` of the file system holding ``directory``, in the next batch."""
        fs = self._filesystem(directory)
        if isinstance(fs, asyncio.Future):
            return fs
        return self.sync(fs.key, fs.flush)

    def _filesystem(self, directory: Path) -> FileSystem | asyncio.Future[None]:
        """Rules 7 and 8: the file system holding ``directory``, or a future already failed
        with the ``OSError`` that prevents flushing it."""
        if not self.whole_fs:
            raise ValueError("file-system flushes need whole_fs")
        try:
            if self._closed:
                raise OSError(errno.ESHUTDOWN, "the sync thread is closed")
            return self._filesystems.of(directory)
        except OSError as exc:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_exception(exc)
            return fut

    def flush_fs_soon(self, directory: Path, within: float) -> asyncio.Future[None]:
        """Rule 8: the next ``syncfs`` of that file system that starts from now on, whoever
        asked for it; if none has started ``within`` seconds, one is started for this."""
        fs = self._filesystem(directory)
        if isinstance(fs, asyncio.Future):
            return fs
        loop = asyncio.get_running_loop()
        if fs.key in self._pending:  # a batch not yet started will flush it: join that one
            return self.sync(fs.key, fs.flush)
        fut = loop.create_future()
        entry = self._soon.get(fs.key)
        if entry is None:
            self._soon[fs.key] = (fs.flush, [fut])
        else:
            entry[1].append(fut)
        if self._soon_timer is None:
            self._soon_timer = loop.call_later(within, self._soon_due, loop)
        return fut

    def _soon_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Rule 8: nobody else flushed in time; the waiting requests form a batch of their own."""
        self._soon_timer = None
        soon, self._soon = self._soon, {}
        for key, (fn, futs) in soon.items():
            entry = self._pending.get(key)
            if entry is None:
                self._pending[key] = (fn, futs)
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
        if self._soon:  # Rule 8: waiters for a flush this batch runs anyway ride along
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
        self._queue.put((loop, batch))
        self.batches += 1
        self.calls += len(batch)

    def _serve(self) -> None:
        """The sync thread: run each batch, then wake the loop once for all of it."""
        _lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, batch = item
            outcome = _run(batch)
            try:
                loop.call_soon_threadsafe(self._finished, loop, outcome)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _finished(self, loop: asyncio.AbstractEventLoop, outcome: Outcome) -> None:
        self._running = False
        for futs, exc in outcome:
            for fut in futs:
                _settle(fut, exc)
        if self._pending and not self._closed:
            self._start(loop)  # what arrived while this batch ran

    def close(self) -> None:
        """Rule 4: finish the running batch, run what is still pending here, and stop. Later
        ``sync`` calls fail with ``OSError``."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._soon_timer is not None:
            self._soon_timer.cancel()
            self._soon_timer = None
        batch, self._pending = self._pending, {}
        for key, (fn, futs) in self._soon.items():  # Rule 8: nobody else will flush now
            entry = batch.get(key)
            if entry is None:
                batch[key] = (fn, futs)
            else:
                entry[1].extend(futs)
        self._soon = {}
        for futs, exc in _run(batch):
            for fut in futs:
                if not fut.done() and not fut.get_loop().is_closed():
                    fut.get_loop().call_soon_threadsafe(_settle, fut, exc)
        self._filesystems.close()


def whole_fs_flush(setting: str) -> bool:
    """Whether ``[queue] flush`` (``"filesystem"`` or ``"file"``) means ``syncfs`` here (Rule 7,
    ``store.fssync`` Rule 1: only where it reports write-back errors)."""
    if setting != "filesystem":
        return False
    if not fssync.available():
        log.info("queue: syncfs does not report write-back errors here (Linux >= 5.8 needed); "
                 "flushing every file on its own")
        return False
    return True


# Rule 6: the sync thread runs at a slightly lower priority than the event loop. Woken by the
# loop for each batch, at equal priority the scheduler often switched to it at once, taking the
# CPU from the loop while the loop held the GIL it then waited for (py-spy: ≈ 6 % of the loop's
# time "in" the queue's put). Its work is waiting for the disk, not the CPU.
SYNC_THREAD_NICE = 5


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SYNC_THREAD_NICE)
    except (OSError, AttributeError) as exc:  # not Linux (no per-thread nice), or not allowed
        log.debug("sync thread priority unchanged: %s", exc)


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def _run(batch: Batch) -> Outcome:
    out: Outcome = []
    for fn, futs in batch.values():
        try:
            fn()
        except OSError as exc:
            out.append((futs, exc))
        except Exception as exc:  # Rule 3
            log.exception("sync function failed")
            out.append((futs, exc))
        else:
            out.append((futs, None))
    return out
