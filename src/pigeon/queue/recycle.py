"""Recycled queue files: emptied files kept in ``tmp/`` and reused instead of created anew.

Every accepted message used to create two files (body, record) and delete both a moment later.
On ext4 each creation allocates an inode; without a journal the allocator also skips every
inode deleted in the last minute (``recently_deleted``), a linear scan that grew with the
message rate and became the largest kernel cost of the server under load (perf, see
docs/benchmarks.md). A file that is emptied and renamed aside instead of deleted keeps its inode,
and the next message's body or record takes it over with a rename: no inode is allocated or
freed on the hot path.

Rules:
1. A pooled file lives in ``tmp/`` as ``free.<pool>.<n>`` (``<pool>`` random per pool, so two
   stores on one directory never share a name) and belongs to nobody: recovery deletes
   ``tmp/`` wholesale at start-up (queue rule 1), so a crash can leave nothing the queue would
   read. It keeps its old content (and so its disk blocks) up to ``KEEP_BLOCKS`` octets; a
   larger one is truncated to zero when it is given back.
2. ``give`` is the queue's "delete": one rename takes the name out of its state directory
   (exactly as ``unlink`` would). Past ``limit`` pooled files, or when a needed truncate
   fails, the file is unlinked instead (with a log line for a failure).
3. ``take`` hands out a pooled file renamed to the caller's ``tmp/`` name, or ``False`` when the
   pool is empty (the caller then creates a file as before). The caller overwrites a taken
   file from offset 0 *without* ``O_TRUNC`` and cuts it to the length it wrote before its
   fsync (``ftruncate``): the blocks are rewritten in place, so a message of the usual size
   neither frees nor allocates a block, and its fsync writes no allocation metadata.
4. Safe to use from several threads at once (a lock guards the list; the renames run outside it).
5. The renames and unlinks go through the queue's IO seam (``durable.io``): ``give`` is a step
   of a removal, whose order the queue's rules fix.

What can go wrong: ``give`` raises ``FileNotFoundError`` when the file is already gone (callers
treat it like ``unlink``'s); other ``OSError``s from the rename propagate.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
from pathlib import Path

from pigeon.durable.io import REAL, FileIO

log = logging.getLogger(__name__)

# Files kept for reuse. Enough for the messages a busy server removes while as many new ones
# arrive (hundreds per second, each file reused within milliseconds); each costs one empty
# inode and one directory entry in tmp/.
DEFAULT_POOL_LIMIT = 1024

FREE_PREFIX = "free."
# A pooled file up to this size keeps its blocks for the next message (rule 1): most mail is a
# few KiB to a few tens of KiB; larger files are emptied so the pool never pins much disk
# (at most DEFAULT_POOL_LIMIT × KEEP_BLOCKS = 64 MiB).
KEEP_BLOCKS = 64 * 1024


class FilePool:
    def __init__(self, tmp_dir: Path, limit: int = DEFAULT_POOL_LIMIT, *, io: FileIO = REAL) -> None:
        self.tmp_dir = tmp_dir
        self._io = io
        self.limit = limit
        self._free: list[Path] = []
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._prefix = f"{FREE_PREFIX}{secrets.token_hex(4)}."
        self.reused = 0  # files handed out again (tests, benchmark)

    def __len__(self) -> int:
        return len(self._free)

    def take(self, target: Path) -> bool:
        """Rename a pooled file to ``target`` (in ``tmp/``); False when none is available."""
        while True:
            with self._lock:
                if not self._free:
                    return False
                free = self._free.pop()
            try:
                self._io.rename(free, target)
            except OSError as exc:  # someone removed it (an operator cleaning tmp/): try the next
                log.warning("queue: pooled file %s unusable: %s", free, exc)
                continue
            self.reused += 1
            return True

    def give(self, path: Path) -> None:
        """Take ``path`` out of its directory (rule 2) and keep it, emptied, for reuse."""
        with self._lock:
            full = len(self._free) >= self.limit
        if full:
            self._io.unlink(path)
            return
        target = self.tmp_dir / f"{self._prefix}{next(self._names)}"
        self._io.rename(path, target)  # FileNotFoundError propagates, as unlink's would
        try:
            if os.stat(target).st_size > KEEP_BLOCKS:
                os.truncate(target, 0)
        except OSError as exc:
            log.warning("queue: could not empty %s for reuse, removing it: %s", target, exc)
            try:
                self._io.unlink(target)
            except OSError as exc2:
                log.warning("queue: could not remove %s: %s", target, exc2)
            return
        with self._lock:
            self._free.append(target)
