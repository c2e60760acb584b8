"""The server's side of its workers' messages (``app.master``'s ``WorkerHandler``): what a
worker says becomes the queue manager's work, and what a worker leaves when it ends is taken
over.

Rules:
1. ``Schedule``: the message is read from the queue files (never from the pipe) and given to
   the queue manager. A queue id that is not queued (or cannot be read) is logged and skipped.
2. ``Complete``: the same, and the attempt's results are recorded as the queue manager's own
   (retries, bounces, DSNs). Results are trusted only if there is exactly one for each of the
   message's recipients; otherwise they are logged and dropped, and the message is scheduled:
   the queue manager attempts it itself (at least once, never lost).
3. ``Changed``: IMAP IDLE sessions on that Maildir are woken (a hint; they sync with the store).
4. When a worker that accepts mail (``app.services`` rule 3) ends, whatever its intake journal
   still holds is moved into the queue files and scheduled (queue rule 10). A failure (a full
   disk) is logged: the worker is restarted all the same, and the next start drains it.
5. ``close`` waits (up to the grace) for the results being recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path

from pigeon.app import ipc
from pigeon.app.master import WORKER_STOP_GRACE, WorkerSpec
from pigeon.app.services import INTAKE_SERVICES, journal_owner
from pigeon.core.results import RecipientResult
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.api import QueueStore, RecordNotFound
from pigeon.queue.body import QueueWriteError
from pigeon.store.changes import ChangeNotifier

log = logging.getLogger(__name__)

Results = list[tuple[RcptState, RecipientResult]]


def match_results(record: QueueRecord, results: tuple[RecipientResult, ...]) -> Results | None:
    """Rule 2: each recipient of ``record`` with its one result, or None."""
    by_key = {r.address.key: r for r in record.rcpts}
    out: Results = []
    for res in results:
        rcpt = by_key.pop(res.recipient.key, None)
        if rcpt is None:  # not a recipient of this message, or a second result for one
            return None
        out.append((rcpt, res))
    return out if not by_key and len(out) == len(record.rcpts) else None


class ServerHub:
    def __init__(self, queue: QueueStore, schedule: Callable[[QueueRecord], None],
                 complete: Callable[[QueueRecord, Results], Coroutine[object, object, None]],
                 changes: ChangeNotifier) -> None:
        self._queue = queue
        self._schedule = schedule
        self._complete = complete
        self._changes = changes
        self._background: set[asyncio.Task[None]] = set()
        # Workers' metrics snapshots (worker name, pid, values) go here (``app.web``).
        self.counters: Callable[[str, int, tuple[tuple[str, tuple[str, ...], float], ...]], None] | None = None

    def message(self, worker: WorkerSpec, msg: ipc.Notice) -> None:
        if isinstance(msg, ipc.Counters):  # the worker's metrics (pigeon.web.metrics rule 2)
            if self.counters is not None:
                self.counters(worker.name, msg.pid, msg.values)
            return
        if isinstance(msg, ipc.Changed):  # rule 3
            self._changes.notify(Path(msg.directory))
            return
        op = "schedule" if isinstance(msg, ipc.Schedule) else "complete"
        try:
            record = self._queue.load(msg.queue_id)
        except (RecordNotFound, OSError, ValueError) as exc:
            log.error("%s: %s %s: %s", worker.name, op, msg.queue_id, exc)
            return
        if isinstance(msg, ipc.Schedule):  # rule 1
            self._schedule(record)
            return
        results = match_results(record, msg.results)  # rule 2
        if results is None:
            log.error("%s: results for %s do not match its recipients; delivering it again",
                      worker.name, msg.queue_id)
            self._schedule(record)
            return
        task = asyncio.create_task(self._complete(record, results))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def ended(self, worker: WorkerSpec) -> None:
        """Rule 4."""
        if not INTAKE_SERVICES.intersection(worker.services):
            return
        try:
            moved = await asyncio.to_thread(self._queue.drain_journal, journal_owner(worker.index))
        except (OSError, QueueWriteError) as exc:  # a full disk too: the worker is restarted all the same
            log.error("%s: draining its journal failed: %s (the next start does it)", worker.name, exc)
            return
        for qid in moved:
            try:
                self._schedule(self._queue.load(qid))
            except (RecordNotFound, OSError, ValueError) as exc:
                log.error("%s: %s from its journal: %s", worker.name, qid, exc)
        if moved:
            log.info("%s: %d messages taken over from its journal", worker.name, len(moved))

    async def close(self, grace: float = WORKER_STOP_GRACE) -> None:
        """Rule 5."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=grace)
