"""Directory fsync, alone and as a group commit shared by concurrent deliveries.

A rename (or link) into ``new/`` is durable only once the directory itself is fsynced. When many
deliveries land in one Maildir at the same time, one fsync can cover all of them.

Rules:
1. ``fsync_dir`` opens the directory read-only, fsyncs it and closes it; errors propagate.
2. ``GroupDirSync.sync(path)`` returns only after an fsync of ``path`` that *started after the
   call* has completed. So every rename that finished before ``sync`` was called is covered.
   Callers that arrive while an fsync is running wait for the next one, and they all share it.
3. At most one fsync per directory runs at a time; different directories sync independently.
4. An fsync error is raised in every caller whose batch it covered; the next batch tries again.
5. Per-directory state exists only while someone waits on it (memory stays bounded by the
   number of directories in flight). The object is used from one event loop at a time.
6. ``ThreadGroupSync`` is the same group commit for callers that are worker threads (a whole
   delivery or queue commit runs in one thread call, so the fsync wait costs no extra hop back
   to the event loop): rules 2-4 hold with "thread" for "caller".

What can go wrong: an OSError from fsync (EIO, ENOSPC on some file systems) reaches each caller
of that batch, which must then treat its delivery as not done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Rule 1."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Batch:
    """The callers of one directory waiting for the next fsync."""

    __slots__ = ("waiters", "task")

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[None]] = []
        self.task: asyncio.Task[None] | None = None


class GroupDirSync:
    """Group commit of directory fsyncs (Rules 2–5)."""

    def __init__(self) -> None:
        self._dirs: dict[Path, _Batch] = {}
        self.fsync_count = 0  # how many directory fsyncs ran (for tests and metrics)

    async def sync(self, path: Path) -> None:
        loop = asyncio.get_running_loop()
        state = self._dirs.get(path)
        if state is None:
            state = self._dirs[path] = _Batch()
        fut: asyncio.Future[None] = loop.create_future()
        state.waiters.append(fut)
        if state.task is None:
            state.task = loop.create_task(self._run(path, state))
        await fut

    async def _run(self, path: Path, state: _Batch) -> None:
        batch: list[asyncio.Future[None]] = []
        try:
            while state.waiters:
                # Rule 2: everyone who asked before this fsync starts is in this batch.
                batch, state.waiters = state.waiters, []
                try:
                    self.fsync_count += 1
                    await asyncio.to_thread(fsync_dir, path)
                except OSError as exc:
                    log.error("fsync of directory %s failed: %s", path, exc)
                    for fut in batch:
                        if not fut.done():
                            fut.set_exception(OSError(exc.errno, exc.strerror, str(path)))
                else:
                    for fut in batch:
                        if not fut.done():
                            fut.set_result(None)
                batch = []
        except BaseException:
            # Cancelled (loop shutting down): nobody may believe their rename is durable.
            log.warning("directory fsync of %s interrupted; %d waiters released with an error", path,
                        len(batch) + len(state.waiters))
            for fut in batch + state.waiters:
                if not fut.done():
                    fut.set_exception(OSError(f"directory fsync of {path} was interrupted"))
            state.waiters = []
            raise
        finally:
            state.task = None
            if not state.waiters and self._dirs.get(path) is state:
                del self._dirs[path]  # Rule 5


class ThreadGroupSync:
    """Group commit of one directory's fsyncs for worker threads (Rule 6).

    ``sync()`` blocks until an fsync of the directory that started after the call has finished;
    threads arriving while one runs share the next one. Each fsync has a generation number;
    a caller needs the first generation started after it arrived.
    """

    # Failed generations remembered so late waiters still see the error; more than this many
    # failures in flight at once is not realistic (each is an I/O error on the queue's disk).
    _MAX_FAILED = 64

    def __init__(self, path: Path, fsync: Callable[[Path], None] | None = None) -> None:
        self.path = path
        self._fsync = fsync if fsync is not None else (lambda p: fsync_dir(p))
        self._cond = threading.Condition(threading.Lock())
        self._started = 0  # generations started
        self._done = 0  # highest generation finished
        self._running = False
        self._failed: dict[int, OSError] = {}
        self.fsync_count = 0

    def sync(self) -> None:
        cond = self._cond
        with cond:
            target = self._started + 1  # Rule 2: the first fsync that starts after this call
            while True:
                if self._done >= target:
                    exc = self._failed.get(target)
                    if exc is not None:
                        raise OSError(exc.errno, exc.strerror, str(self.path))
                    return
                if not self._running:
                    self._running = True
                    self._started += 1
                    gen = self._started
                    self.fsync_count += 1
                    break
                cond.wait()
        error: OSError | None = None
        try:
            self._fsync(self.path)
        except OSError as exc:
            log.error("fsync of directory %s failed: %s", self.path, exc)
            error = exc
        finally:
            with cond:
                self._running = False
                self._done = gen
                if error is not None:
                    if len(self._failed) >= self._MAX_FAILED:
                        self._failed.pop(min(self._failed))
                    self._failed[gen] = error
                cond.notify_all()
        if error is not None:
            raise OSError(error.errno, error.strerror, str(self.path))
        # gen >= target always holds for the thread that ran it (it started after arriving).


class ThreadGroupSyncs:
    """One ``ThreadGroupSync`` per directory, made on first use; safe from many threads."""

    def __init__(self, fsync: Callable[[Path], None] | None = None) -> None:
        self._fsync = fsync
        self._lock = threading.Lock()
        self._dirs: dict[Path, ThreadGroupSync] = {}

    def sync(self, path: Path) -> None:
        group = self._dirs.get(path)
        if group is None:
            with self._lock:
                group = self._dirs.get(path)
                if group is None:
                    group = self._dirs[path] = ThreadGroupSync(path, self._fsync)
        group.sync()

    def forget(self, path: Path) -> None:
        """Drop a directory's state (the directory was removed); harmless if unknown."""
        with self._lock:
            self._dirs.pop(path, None)

    @property
    def fsync_count(self) -> int:
        return sum(g.fsync_count for g in list(self._dirs.values()))
