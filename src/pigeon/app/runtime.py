"""What every Pigeon process sets up first, the server and its workers alike: the log, the
C allocator and the garbage collector.

Rules:
1. ``setup_logging`` replaces whatever handlers the root logger had: one stream (standard
   error) plus ``log_file`` when configured, each line in ``maillog``'s format. A worker process
   calls it after pointing its standard output at standard error (``app.worker`` rule 1), so
   its lines go where the server's go, with its own pid.
2. ``tune_allocator`` is a hint to glibc; elsewhere, or when refused, nothing happens.
3. ``reopen_logs`` closes and opens ``log_file`` again (SIGHUP and SIGUSR1, after logrotate
   moved it away), in the server and in each worker; a file that cannot be opened again keeps
   the old stream and says so on standard error and in the old file.
4. ``log_syslog = true`` adds syslog (``/dev/log``, facility mail, as Postfix and Dovecot log;
   tag ``pigeon[pid]``). The mail lines then go through ``logging`` too (``maillog`` rule 4's
   shortcut writes to streams only).
5. ``tune_gc`` (at start, before anything is built) makes the cyclic garbage collector's young
   collections rarer (``GC_THRESHOLDS``); ``freeze_startup`` (once the process has built its
   services and opened its listeners) moves every object alive then into the permanent
   generation (``gc.freeze``), so a full collection never walks the modules, tables and
   configuration again. Reference counting still frees everything at once; only cycles wait
   longer. Why: with 10,000 IMAP sessions (~100 tracked objects each) a process holds about a
   million tracked objects, and the collections run during a burst of work (a delivery waking
   every IDLE session) walked them over and over (docs/benchmarks.md, "IDLE sessions").
"""

from __future__ import annotations

import ctypes
import gc
import logging
import logging.handlers
import sys
from typing import TextIO, cast

from pigeon import maillog
from pigeon.config import Config

log = logging.getLogger(__name__)

# glibc's mallopt(M_MMAP_THRESHOLD): asyncio reads a socket into a fresh 256 KiB buffer and
# shrinks it to what arrived; above the default threshold (128 KiB) that is an mmap, an mremap and
# an munmap per read (strace: ≈ 10 of the ≈ 130 system calls of an SMTP message), and freeing
# the shrunk chunk never raises glibc's dynamic threshold. 1 MiB keeps such buffers on the heap.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024


def tune_allocator() -> None:
    """Raise the C allocator's mmap threshold (glibc only; elsewhere nothing happens)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; keeping the default")


# Rule 5: a young (gen-0) collection every 50,000 net allocations instead of 700, a gen-1
# collection every 2 of those (so gen 1 never holds more than ~100,000 survivors to walk), a full
# one every 1,000 gen-1 collections (and then only when the objects that survived since the last
# full one are over a quarter of the old ones, CPython's own rule). Measured with 9,800 IDLE
# sessions (~1 million tracked objects): with (50000, 20, 100) a gen-1 collection of 0.49 s fell
# in the middle of a delivery's wake-up; with these values the wake-up's CPU fell from 0.88 s to
# 0.51 s and every session was woken within 0.64 s (docs/benchmarks.md, "IDLE sessions").
# Reference counting frees everything else at once; only garbage cycles wait longer.
GC_THRESHOLDS = (50_000, 2, 1_000)


def tune_gc() -> None:
    """Rule 5: rarer young collections."""
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_startup() -> None:
    """Rule 5: what start-up built stays out of every later collection."""
    gc.collect()
    gc.freeze()
    log.debug("gc: %d start-up objects frozen", gc.get_freeze_count())


SYSLOG_SOCKET = "/dev/log"  # rule 4: the local syslog daemon (journald or rsyslog) listens here
SYSLOG_FORMAT = "pigeon[%(process)d]: %(levelname)s %(name)s: %(message)s"  # RFC 3164 §4.1.3 TAG[pid]:


class ReopenableFileHandler(logging.FileHandler):
    """Rule 3: ``log_file``, reopened on request under the handler's lock."""

    def reopen(self) -> None:
        self.acquire()
        try:
            try:
                fresh = self._open()
            except OSError as exc:
                log.error("cannot reopen the log file %s: %s; writing to the old one", self.baseFilename, exc)
                return
            old, self.stream = self.stream, fresh
            if old is not None:
                old.close()
        finally:
            self.release()


def reopen_logs() -> int:
    """Rule 3: reopen every log file of this process; returns how many."""
    n = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
            n += 1
    return n


def setup_logging(config: Config, stream: TextIO = sys.stderr, syslog_address: str = SYSLOG_SOCKET) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = maillog.LineFormatter()
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    handlers = [handler]
    if config.log_file is not None:
        config.log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = ReopenableFileHandler(config.log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
        handlers.append(cast("logging.StreamHandler[TextIO]", fh))  # a FileHandler writes text too
    root.setLevel(logging.INFO)
    if config.log_syslog:
        sh = logging.handlers.SysLogHandler(syslog_address, facility=logging.handlers.SysLogHandler.LOG_MAIL)
        sh.setFormatter(logging.Formatter(SYSLOG_FORMAT))
        root.addHandler(sh)
        maillog.write_directly(None)  # rule 4
        return
    maillog.write_directly(handlers)  # the same streams and format, without logging's overhead

