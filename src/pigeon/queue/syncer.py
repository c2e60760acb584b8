"""Durable file operations for the queue, and group commit of directory fsyncs.

A rename is durable only once the directory that holds the new name has been fsynced. Many
messages are accepted at once, and each would otherwise pay its own directory fsync; the
``DirSyncer`` lets concurrent commits that renamed into the same directory share one.

Rules:
1. ``DirSyncer.sync()`` returns only after an fsync of the directory that *started after*
   ``sync()`` was called, so every rename the caller made before calling is covered.
2. At most one fsync per directory runs at a time. Callers that arrive while one runs wait for
   the next one, which then covers all of them (a batch). The first caller of a batch starts it.
3. An fsync failure is delivered to every caller of that batch (each undoes its own work);
   the next batch tries again.
4. The blocking work (fsync, write, rename) runs in the executor given, never on the event
   loop thread.

What can go wrong: ``OSError`` (EIO, ENOSPC) from fsync or write propagates to the callers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from pathlib import Path

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the names created or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_synced(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist), write ``data`` and fsync it. Removes it on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        _unlink_quietly(path)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("queue: could not remove %s while undoing a failed write: %s", path, exc)


class DirSyncer:
    """Group commit for one directory's fsyncs (rules 1-3). Bound to one event loop."""

    def __init__(self, path: Path, executor: Executor) -> None:
        self.path = path
        self._executor = executor
        self._waiting: asyncio.Future[None] | None = None  # the batch not yet started
        self._running = False
        self.fsyncs = 0  # how many directory fsyncs ran (for tests and the benchmark)

    async def sync(self) -> None:
        loop = asyncio.get_running_loop()
        if self._waiting is None:
            batch: asyncio.Future[None] = loop.create_future()
            # Retrieve the outcome even if every waiter was cancelled (no "never retrieved" noise).
            batch.add_done_callback(_consume)
            self._waiting = batch
        batch = self._waiting
        if not self._running:
            self._launch(loop)
        # shield: a cancelled caller must not cancel the batch the others are waiting for.
        await asyncio.shield(batch)

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._waiting
        if batch is None:
            return
        self._waiting = None
        self._running = True
        self.fsyncs += 1
        work = loop.run_in_executor(self._executor, fsync_dir, self.path)

        def finished(done: asyncio.Future[None]) -> None:
            self._running = False
            if done.cancelled():  # the loop is shutting down
                batch.cancel()
                return
            exc = done.exception()
            if exc is not None:
                log.error("queue: fsync of directory %s failed: %s", self.path, exc)
                batch.set_exception(exc)
            else:
                batch.set_result(None)
            if self._waiting is not None:
                self._launch(loop)

        work.add_done_callback(finished)


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
