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
3. ``Changed``: IMAP IDLE sessions on that Maildir are woken (a hint; they sync with the store):
   the server's own (``changes``) and, through ``ChangeRelay``, those of every IMAP worker but
   the one it came from.
6. ``ChangeRelay`` carries the server's own change notices (its ``ChangeBus``'s ``forward``:
   local deliveries, its IMAP sessions; from any thread) and the workers' to the IMAP workers
   (``CHANGE_SERVICES``), one ``Changed`` per folder per turn of the loop, never back to the
   worker it came from (docs/architecture.md "Change notices between processes").
4. When a worker that accepts mail (``app.services`` rule 3) ends, whatever its intake journal
   still holds is moved into the queue files and scheduled (queue rule 10). A failure (a full
   disk) is logged: the worker is restarted all the same, and the next start drains it.
5. ``close`` waits (up to the grace) for the results being recorded.
7. When any worker ends, ``on_ended`` is told first (the server frees its slot of the pool's
   load board, ``net.loadboard`` rule 3).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path

from pigeon.app import ipc
from pigeon.app.master import WORKER_STOP_GRACE, WorkerSpec
from pigeon.app.services import CHANGE_SERVICES, INTAKE_SERVICES, journal_owner
from pigeon.core.results import RecipientResult
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.api import QueueStore, RecordNotFound
from pigeon.queue.body import QueueWriteError
from pigeon.store.changes import ChangeBus, ChangeNotifier

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


Send = Callable[[ipc.MasterMessage, Callable[[WorkerSpec], bool]], int]  # app.master.Master.send
_EVERYONE = -1  # a notice from the server itself, or from several processes in one turn


class ChangeRelay:
    """Rule 6."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        """Made on ``loop``'s own thread."""
        self._loop = loop
        self._thread = threading.get_ident()  # the loop's
        self._send = send
        self._pending: dict[str, int] = {}  # folder → index of the one worker it came from

    def notify(self, directory: Path) -> None:
        """The server's own notice (``ChangeBus.forward``); safe from any thread. From the
        loop's own thread (the fast lane) without ``call_soon_threadsafe``, whose wake-up of the
        loop is a system call each."""
        if threading.get_ident() == self._thread:
            self._add(str(directory), _EVERYONE)
        else:
            self._loop.call_soon_threadsafe(self._add, str(directory), _EVERYONE)

    def from_worker(self, worker: WorkerSpec, directory: Path) -> None:
        self._add(str(directory), worker.index)

    def _add(self, directory: str, origin: int) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        if self._pending.get(directory, origin) != origin:
            origin = _EVERYONE
        self._pending[directory] = origin

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for directory, origin in pending.items():
            self._send(ipc.Changed(directory), functools.partial(_listens_for_changes, origin))


def _listens_for_changes(origin: int, worker: WorkerSpec) -> bool:
    """An IMAP worker other than the one the notice came from."""
    return worker.index != origin and not CHANGE_SERVICES.isdisjoint(worker.services)


class _LocalWake:
    """The server's waiters only (``ChangeBus.wake``): a worker's notice must not be forwarded
    as the server's own (it would go back to that worker)."""

    def __init__(self, bus: ChangeBus) -> None:
        self._bus = bus

    def notify(self, directory: Path) -> None:
        self._bus.wake(directory)


def local_wake(bus: ChangeBus) -> ChangeNotifier:
    return _LocalWake(bus)


class ServerHub:
    def __init__(self, queue: QueueStore, schedule: Callable[[QueueRecord], None],
                 complete: Callable[[QueueRecord, Results], Coroutine[object, object, None]],
                 changes: ChangeNotifier, relay: ChangeRelay | None = None) -> None:
        self._relay = relay
        self._queue = queue
        self._schedule = schedule
        self._complete = complete
        self._changes = changes
        self._background: set[asyncio.Task[None]] = set()
        # Workers' metrics snapshots (worker name, pid, values) go here (``app.web``).
        self.counters: Callable[[str, int, tuple[tuple[str, tuple[str, ...], float], ...]], None] | None = None
        self.on_ended: Callable[[WorkerSpec], None] | None = None  # rule 7

    def message(self, worker: WorkerSpec, msg: ipc.Notice) -> None:
        if isinstance(msg, ipc.Counters):  # the worker's metrics (pigeon.web.metrics rule 2)
            if self.counters is not None:
                self.counters(worker.name, msg.pid, msg.values)
            return
        if isinstance(msg, ipc.Changed):  # rule 3
            directory = Path(msg.directory)  # one path object for both (a notice per turn of a worker's loop)
            self._changes.notify(directory)
            if self._relay is not None:
                self._relay.from_worker(worker, directory)
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
        """Rules 4 and 7."""
        if self.on_ended is not None:
            self.on_ended(worker)
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
