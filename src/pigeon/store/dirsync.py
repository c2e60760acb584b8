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

What can go wrong: an OSError from fsync (EIO, ENOSPC on some file systems) reaches each caller
of that batch, which must then treat its delivery as not done.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
