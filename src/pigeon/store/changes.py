"""In-process change notices for mail folders: a delivery or another session wakes IDLE at once.

Rules:
1. Keys are folder directories (a user's Maildir for INBOX, ``.Sent/`` and so on), compared as
   absolute paths. ``notify(dir)`` may be called from any thread (deliveries and store
   operations run in worker threads); each waiter's event is set on its own event loop
   (``call_soon_threadsafe``).
2. A waiter is registered with ``watch(dir)`` (on the loop that will wait) and must be released
   with ``unwatch``; a waiter holds one ``asyncio.Event`` and nothing else. ``watch_with(dir,
   waker)`` registers any object with a ``set()`` instead (``imapd.idlewake``: one per folder for all
   its IDLE sessions), called on its loop like ``Event.set``.
3. Notices are hints: a waiter still syncs with the store to learn what changed, and still
   polls slowly for changes made outside this process (mutt renaming files, another tool).
4. Other processes (``app``: IMAP worker processes, docs/architecture.md "Change notices
   between processes"): ``notify`` also tells ``forward`` (set by the composition root; it must
   be safe from any thread), which carries the notice to the other processes; a notice that
   came from another process is given to ``wake``, which wakes this process's waiters only, so
   a notice never travels back.
5. A notice enters each event loop once, whatever the number of its waiters: a delivery to
   an account whose 100 sessions IDLE is one ``call_soon_threadsafe`` (one wake-up write of
   the loop's self-pipe, one handover of the GIL), not 100 (docs/benchmarks.md, "IDLE
   sessions").

What can go wrong: a waiter whose loop is closed is skipped (its session is gone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


def _key(directory: Path) -> str:
    return os.path.abspath(directory)


class Waker(Protocol):
    """What a notice sets (Rule 2): an ``asyncio.Event``, or a folder's IDLE group."""

    def set(self) -> None: ...


def _set_all(events: list[Waker]) -> None:
    for event in events:
        event.set()


class ChangeNotifier(Protocol):
    """What a delivery needs to tell IMAP sessions that a folder changed (a ChangeBus, or a
    worker process's link to the server, ``app.worker``)."""

    def notify(self, directory: Path) -> None: ...


class ChangeBus:
    def __init__(self, forward: ChangeNotifier | None = None) -> None:
        self.forward = forward  # Rule 4
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, Waker]]] = {}

    def watch(self, directory: Path) -> asyncio.Event:
        """Rule 2: an event set whenever the folder changes; call from the waiting loop."""
        event = asyncio.Event()
        self.watch_with(directory, event)
        return event

    def watch_with(self, directory: Path, waker: Waker) -> None:
        """Rule 2: ``waker.set()`` is called on this loop whenever the folder changes."""
        entry = (asyncio.get_running_loop(), waker)
        with self._lock:
            self._waiters.setdefault(_key(directory), set()).add(entry)

    def unwatch(self, directory: Path, event: Waker) -> None:
        key = _key(directory)
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is None:
                return
            for entry in [e for e in waiters if e[1] is event]:
                waiters.discard(entry)
            if not waiters:
                del self._waiters[key]

    def notify(self, directory: Path) -> None:
        """Rule 1: wake every waiter on ``directory``, and tell other processes (Rule 4); safe
        from any thread."""
        self.wake(directory)
        if self.forward is not None:
            self.forward.notify(directory)

    def wake(self, directory: Path) -> None:
        """Rule 4: wake this process's waiters on ``directory`` only; one call into each loop for
        all its waiters (rule 5)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Waker]] = {}
        with self._lock:
            for loop, event in self._waiters.get(_key(directory), ()):
                by_loop.setdefault(loop, []).append(event)
        for loop, events in by_loop.items():
            try:
                loop.call_soon_threadsafe(_set_all, events)
            except RuntimeError:  # the loop is closed: those sessions are over
                log.debug("change notice for a closed loop skipped")

    def watched(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())
