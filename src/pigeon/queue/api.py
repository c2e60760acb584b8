"""The queue's seam: what cleanup, qmgr, bounce, control and the app may ask of a queue.

``FileQueueStore`` (``queue.store``: state directories, ``msg/`` bodies, intake journals) is the
one implementation today. A second one (PostgreSQL, for several nodes; docs/architecture.md
"The queue behind its seam") implements this Protocol and nothing else: no caller may reach
past it to files, directories or journals.

Rules:
1. ``commit`` / ``commit_sync`` are the commit point: when they return, the message is durable
   and the SMTP server may say 250; when they raise ``QueueWriteError`` nothing is queued. A
   body is written through the ``BodyWriter`` from ``new_body`` before the commit.
2. Where a committed message is kept is the store's decision (cleanup only commits): a store
   with an intake journal takes small local mail there and holds its body in memory for the
   fast lane (``in_journal``; ``queue.store`` rule 8).
3. A message's state is one of ``State``; ``move`` changes it (hold, release, defer), ``update``
   rewrites the per-recipient state, ``remove`` ends it. Each is durable when it returns.
4. ``scan`` lists the records in the given states; ``journal_messages`` the messages committed
   but not yet in a state (``pigeon queue list`` shows them as ``journal``; a store without a
   journal returns none).
5. ``recover`` runs once at start-up, before any listener opens; ``drain_journal`` takes over
   what another process of this node committed (an SMTP worker that ended).
6. ``body_path`` / ``open_body``: the body's bytes, exactly as delivery sends them.

What can go wrong: ``QueueWriteError`` from every write; ``RecordNotFound`` (a FileNotFoundError)
for an id not queued; ``CorruptRecord`` from ``load``/``move``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from pigeon.core.envelope import Envelope
from pigeon.core.queueid import QueueId
from pigeon.queue.body import BodyWriter
from pigeon.queue.record import QueueError, QueueRecord, RcptState, State
from pigeon.queue.recovery import RecoveryReport

MOVABLE_STATES: tuple[State, ...] = ("active", "deferred", "hold")


class RecordNotFound(QueueError, FileNotFoundError):
    """No record with this id in any state (a FileNotFoundError, so callers that race with a
    removal can catch either)."""


class QueueStore(Protocol):
    """The queue seam (rules above); ``queue.store.FileQueueStore`` implements it."""

    # Rule 1/2: called with each record committed after its committer went away (the app
    # hands it to the queue manager), so that it is not left undelivered until the next start.
    orphans: Callable[[QueueRecord], None] | None

    # -- receiving (rule 1, 2) ---------------------------------------------------------------
    def new_body(self) -> BodyWriter: ...

    async def commit(self, body: BodyWriter, envelope: Envelope, rcpts: list[RcptState]) -> QueueRecord: ...

    def commit_sync(self, body: BodyWriter, envelope: Envelope, rcpts: list[RcptState]) -> QueueRecord: ...

    # -- reading (rules 4, 6) ----------------------------------------------------------------
    def load(self, qid: QueueId) -> QueueRecord: ...

    def state_of(self, qid: QueueId) -> State: ...

    def scan(self, states: Iterable[State] = MOVABLE_STATES) -> Iterator[QueueRecord]: ...

    def journal_messages(self) -> list[QueueRecord]: ...

    def in_journal(self, qid: QueueId) -> bool:
        """Rule 2: ``qid`` was just committed to an intake journal and is delivered from
        memory by the journal's own agent (the fast lane), not from a state; a store without a
        journal says False."""
        ...

    def body_path(self, qid: QueueId) -> Path: ...

    def open_body(self, qid: QueueId) -> BinaryIO: ...

    # -- changing (rule 3) -------------------------------------------------------------------
    async def update(self, record: QueueRecord) -> None: ...

    def update_sync(self, record: QueueRecord) -> None: ...

    def move(self, qid: QueueId, state: State) -> QueueRecord: ...

    async def move_async(self, qid: QueueId, state: State) -> QueueRecord: ...

    def remove(self, qid: QueueId) -> None: ...

    async def remove_async(self, qid: QueueId) -> None: ...

    # -- start-up and shut-down (rule 5) -----------------------------------------------------
    def recover(self) -> RecoveryReport: ...

    def drain_journal(self, owner: str, *, report: RecoveryReport | None = None,
                      wait: float = ...) -> list[QueueId]: ...

    def close(self) -> None: ...
