"""The sessions of one folder woken together sync in one worker-thread hop.

Rules:
1. ``sync(mailbox)`` takes the view's ``tick()`` at once, on the loop (store context Rule 6:
   a scan that starts after it stands for this session's own), and joins the open batch of
   the folder (keyed by its directory, as change notices are, ``store.changes``). The first
   session to join schedules the batch for the next turn of the loop (``call_soon``), so the
   sessions that one change notice resumed in this turn all join it.
2. One ``asyncio.to_thread`` call runs the batch's ``Mailbox.sync(since)`` one after the other
   (the account lock serialises them anyway). Each session gets its own ``Changes``, or its
   own exception (a deleted folder is ``MailboxError("NONEXISTENT")`` for each).
3. Why: 10,000 IDLE sessions of 100 accounts woken by a delivery to each were 10,000 thread
   hops, each queued behind the others in the loop's executor; now they are 100, and with
   store context Rule 6 and view Rule 11 each folder is scanned and read once
   (docs/benchmarks.md, "IDLE sessions").
4. A session that stops waiting (its connection closed, the server stopping) is skipped when
   the batch ends; nothing else refers to it.

What can go wrong: an exception of one view's sync goes to that session only; if the batch's
thread call itself fails (the executor shut down at exit), every waiting session gets that
error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pigeon.store.mailbox import Changes, Mailbox

_Waiter = tuple[Mailbox, float, "asyncio.Future[Changes]"]


def run_syncs(items: list[tuple[Mailbox, float]]) -> list[Changes | Exception]:
    """Rule 2, in a worker thread."""
    out: list[Changes | Exception] = []
    for mailbox, since in items:
        try:
            out.append(mailbox.sync(since))
        except Exception as exc:  # noqa: BLE001 — handed to that session (rule 2)
            out.append(exc)
    return out


class SyncBatches:
    """Rules 1-4; one per session factory, used from its event loop only."""

    def __init__(self) -> None:
        self._open: dict[Path, list[_Waiter]] = {}
        self._running: set[asyncio.Task[list[Changes | Exception]]] = set()

    async def sync(self, mailbox: Mailbox) -> Changes:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Changes] = loop.create_future()
        key = mailbox.directory
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = []
            loop.call_soon(self._start, key)
        batch.append((mailbox, mailbox.tick(), done))
        return await done

    def _start(self, key: Path) -> None:
        batch = self._open.pop(key)
        task = asyncio.ensure_future(asyncio.to_thread(run_syncs, [(m, since) for m, since, _ in batch]))
        self._running.add(task)
        task.add_done_callback(lambda t: self._finish(t, batch))

    def _finish(self, task: asyncio.Task[list[Changes | Exception]], batch: list[_Waiter]) -> None:
        self._running.discard(task)
        if task.cancelled():
            results: list[Changes | Exception] = [RuntimeError("the sync was cancelled")] * len(batch)
        elif (failed := task.exception()) is not None:
            results = [RuntimeError(f"the sync failed: {failed!r}")] * len(batch)
        else:
            results = task.result()
        for (_, _, done), got in zip(batch, results):
            if done.done():  # rule 4
                continue
            if isinstance(got, Exception):
                done.set_exception(got)
            else:
                done.set_result(got)
