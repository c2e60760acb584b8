"""IDLE sessions of a folder woken together: one callback syncs their views and writes their updates.

Rules:
1. A session waiting in IDLE on a selected folder holds an ``IdleTicket`` in that folder's
   group (keyed by the folder's directory, as change notices are, ``store.changes``). The group,
   not each session, watches the folder: one ``ChangeBus.watch_with`` per folder and loop.
2. A notice puts the folder in the next *round* (``call_soon``; one round runs at a time, and
   the folders notified while it runs make the next one). A round takes the ``tick()`` on the
   loop (store context Rule 6), syncs the views of all its folders in one worker-thread hop,
   each folder under one lock, one read of its row and one scan (``store.mailbox.sync_views``,
   view Rule 12), then, back on the loop and in one callback,
   turns each session's ``Changes`` into its untagged responses (``Selected.apply``: EXISTS,
   RECENT, EXPUNGE or VANISHED, FETCH FLAGS, FLAGS for a new keyword — the same bytes and
   the same map updates as the session's own sync, RFC 3501 §7.3.1-7.4.2, RFC 9051 §7.4-7.5)
   and writes them straight to its connection. The session's task is not woken: a delivery to
   100 sessions costs 100 ``apply`` calls and 100 socket writes, not 100 task wake-ups, syncs
   through the session's own path and re-armed waits; and a delivery to 100 accounts is a few
   rounds, each one thread hop, not 100 threads fighting the event loop for the GIL
   (docs/benchmarks.md, "IDLE sessions").
3. A ticket is *held* while its session runs (its own sync before waiting, the command after
   DONE): a batch skips a held ticket and marks it ``missed``, and ``ready`` then tells the
   session to sync itself again before it waits, so no notice is lost between the session's
   sync and its wait. Only a session waiting in ``driver.fill`` is ever touched by a batch.
4. The session takes the normal path (its ``wake`` event is set; it writes what the batch
   left in ``late`` through the driver, with back-pressure, or raises the error as its own
   sync would) when: its view's sync failed (a deleted folder: ``NONEXISTENT`` ends the
   session with ``* BYE``), or its connection already holds more than ``MAX_UNSENT`` octets
   unsent (a client that does not read gets no more until it does).
5. A session that stops waiting while a batch with its ticket runs (``DONE`` arrived, the
   poll timer fired) waits for that batch (``hold`` returns it) and takes its ``late`` bytes:
   the batch has already moved its view, so those changes are reported by no other sync.

What can go wrong: the thread hop failing as a whole (the executor shut down at exit) gives
every ticket of the batch that error (rule 4). A session whose connection is closing gets
nothing written (``Stream.write_nowait``); it ends on its read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Final

from pigeon.imapd.selected import Selected
from pigeon.net.listener import Stream
from pigeon.store.changes import ChangeBus
from pigeon.store.mailbox import Changes, Mailbox, sync_views

log = logging.getLogger(__name__)

#: Rule 4: above this many octets waiting in the transport's buffer the session writes its own
#: updates with back-pressure. An IDLE update is tens of octets; 64 KiB is asyncio's own high
#: water mark for a transport's write buffer.
MAX_UNSENT: Final = 64 * 1024


class IdleTicket:
    """One session's place in its folder's group (rules 1, 3-5)."""

    __slots__ = ("sel", "stream", "wake", "held", "missed", "batch", "late", "group")

    def __init__(self, sel: Selected, stream: Stream, group: _Folder) -> None:
        self.sel = sel
        self.stream = stream
        self.wake = asyncio.Event()  # rule 4: set when the session must take the normal path
        self.held = True  # rule 3
        self.missed = False
        self.batch: _Batch | None = None  # rule 5: the batch that has this ticket in flight
        self.late: bytes | Exception | None = None  # rule 4: for the session to write or raise
        self.group = group

    def take_late(self) -> bytes | Exception | None:
        late, self.late = self.late, None
        return late


def _timed_sync(views: list[Mailbox], since: float) -> tuple[list[Changes | Exception], float]:
    """``sync_views`` in the worker thread, and the CPU time it took there (the debug log)."""
    t = time.thread_time()
    out = sync_views(views, since)
    return out, time.thread_time() - t


class _Batch:
    __slots__ = ("done", "tickets", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop, tickets: list[IdleTicket]) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.tickets = tickets
        self.started = time.monotonic()


class _Folder:
    """The IDLE sessions of one folder on one loop; the bus's waker for it (rule 1)."""

    __slots__ = ("directory", "members", "owner")

    def __init__(self, directory: Path, owner: IdleGroups) -> None:
        self.directory = directory
        self.owner = owner
        self.members: dict[IdleTicket, None] = {}  # insertion-ordered set

    def set(self) -> None:
        """A change notice (``store.changes`` Waker), on the loop (rule 2)."""
        self.owner.notice(self)


class IdleGroups:
    """Rules 1-5: the IDLE groups of one session factory, used from its event loop only."""

    def __init__(self, bus: ChangeBus) -> None:
        self.bus = bus
        self._folders: dict[Path, _Folder] = {}
        self._due: dict[_Folder, None] = {}  # rule 2: folders notified since the last round began
        self._scheduled = False
        self._running = False

    def notice(self, folder: _Folder) -> None:
        """Rule 2: the folder joins the next round; one round runs at a time."""
        self._due[folder] = None
        if not self._running and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        due, self._due = list(self._due), {}
        tickets = []
        for folder in due:
            for t in folder.members:
                if t.held:
                    t.missed = True  # rule 3
                else:
                    tickets.append(t)
            self.drop(folder)
        if not tickets:
            return
        batch = _Batch(asyncio.get_running_loop(), tickets)
        for t in tickets:
            t.batch = batch
        views = [t.sel.mailbox for t in tickets]
        since = views[0].tick()
        self._running = True
        task = asyncio.ensure_future(asyncio.to_thread(_timed_sync, views, since))
        task.add_done_callback(lambda done: self._finish(done, batch))

    def _finish(self, task: asyncio.Future[tuple[list[Changes | Exception], float]], batch: _Batch) -> None:
        """Rule 2, back on the loop: every session's updates, written from this one callback."""
        self._running = False
        if task.cancelled():
            results: list[Changes | Exception] = [RuntimeError("the sync was cancelled")] * len(batch.tickets)
        elif (failed := task.exception()) is not None:
            results = [RuntimeError(f"the sync failed: {failed!r}")] * len(batch.tickets)
        else:
            results, cpu = task.result()
            log.debug("imap idle: a round synced %d views in %.3f s (%.3f s of CPU in its thread)",
                      len(results), time.monotonic() - batch.started, cpu)
        for t, got in zip(batch.tickets, results):
            t.batch = None
            waiting = not t.held and t in t.group.members
            if isinstance(got, Exception):
                t.late = got
            else:
                out = t.sel.apply(got, allow_expunge=True)
                if not out:
                    continue
                transport = t.stream.writer.transport
                if waiting and transport.get_write_buffer_size() <= MAX_UNSENT:
                    t.stream.write_nowait(out)
                    continue
                t.late = out  # rule 4 (or rule 5: the session left and awaits this batch)
            if waiting:
                t.wake.set()
        batch.done.set_result(None)
        if self._due:
            self._start()

    def enter(self, sel: Selected, stream: Stream) -> IdleTicket:
        """A session starts IDLE on ``sel``: its ticket, held (rule 3) until ``ready``."""
        directory = sel.mailbox.directory
        group = self._folders.get(directory)
        if group is None:
            group = self._folders[directory] = _Folder(directory, self)
            self.bus.watch_with(directory, group)
        ticket = IdleTicket(sel, stream, group)
        group.members[ticket] = None
        return ticket

    @staticmethod
    def ready(ticket: IdleTicket) -> bool:
        """Rule 3: release the ticket before the session waits; False (still held) when a
        notice came while it was held: the session syncs again first."""
        if ticket.missed:
            ticket.missed = False
            return False
        ticket.held = False
        return True

    @staticmethod
    def hold(ticket: IdleTicket) -> _Batch | None:
        """Rule 3 (the session stopped waiting); the batch it must wait for (rule 5)."""
        ticket.held = True
        return ticket.batch

    def leave(self, ticket: IdleTicket) -> None:
        """The session's IDLE is over (DONE, the session ending)."""
        ticket.held = True
        group = ticket.group
        group.members.pop(ticket, None)
        self.drop(group)

    def drop(self, group: _Folder) -> None:
        """Forget a group with no session left and no notice due (rule 1)."""
        if not group.members and group not in self._due:
            self.bus.unwatch(group.directory, group)
            if self._folders.get(group.directory) is group:
                del self._folders[group.directory]

    def waiting(self) -> int:
        """Sessions with a ticket (for tests)."""
        return sum(len(f.members) for f in self._folders.values())
