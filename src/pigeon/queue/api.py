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
   with an intake journal takes small local mail there and holds its body in memory for its
   delivery (``in_journal``; ``queue.store`` rule 8). Such a message leaves the journal by
   ``remove`` (delivered) or ``spill`` (into a state, for the queue manager's retries).
3. A message's state is one of ``State``; ``move`` changes it (hold, release, defer), ``update``
   rewrites the per-recipient state, ``remove`` ends it. Each is durable when it returns.
4. ``scan`` lists the records in the given states; ``journal_messages`` the messages committed
   but not yet in a state (state ``journal``; a store without a journal returns none);
   ``load`` finds either.
5. ``recover`` runs once at start-up, before any listener opens; ``drain_journal`` takes over
   what another process of this node committed (an SMTP worker that ended).
6. ``body`` / ``open_body``: the body's bytes, exactly as delivery sends them. A delivery agent
   reads them through a ``BodySource`` and never learns where they are kept (a file, memory,
   a journal segment; ``queue.source``; a database's large object later).

What can go wrong: ``QueueWriteError`` from every write; ``RecordNotFound`` (a FileNotFoundError)
for an id not queued; ``CorruptRecord`` from ``load``/``move``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


class BodySource(Protocol):
    """Rule 6: a message body, wherever it is kept (``queue.source`` rules)."""

    @property
    def size(self) -> int: ...

    def open(self) -> BinaryIO:
        """A fresh reader from the first octet (the caller closes it). Blocking."""
        ...

    async def read(self) -> bytes:
        """The whole body (for small mail: the fast road)."""
        ...

    def in_memory(self) -> bytes | None:
        """The bytes when this source already holds them in memory (reading them costs no IO
        and no thread hop: journaled mail on the fast road), else None (``queue.source`` Rule 4)."""
        ...


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
        """Rule 2: ``qid`` is live in this process's intake journal, delivered by the fast road
        (``qmgr.lane``), not from a state; a store without a journal says False."""
        ...

    def body(self, qid: QueueId) -> BodySource: ...

    def open_body(self, qid: QueueId) -> BinaryIO: ...

    # -- changing (rule 3) -------------------------------------------------------------------
    async def update(self, record: QueueRecord) -> None: ...

    def update_sync(self, record: QueueRecord) -> None: ...

    def move(self, qid: QueueId, state: State) -> QueueRecord: ...

    async def move_async(self, qid: QueueId, state: State) -> QueueRecord: ...

    def remove(self, qid: QueueId) -> None: ...

    async def remove_async(self, qid: QueueId) -> None: ...

    async def spill(self, record: QueueRecord, state: State = "active") -> None:
        """Rule 2: move a message live in this process's journal into ``state`` (``active`` or
        ``hold``); raises ``QueueWriteError`` and the message stays in the journal."""
        ...

    # -- start-up and shut-down (rule 5) -----------------------------------------------------
    def recover(self) -> RecoveryReport: ...

    def drain_journal(self, owner: str, *, report: RecoveryReport | None = None,
                      wait: float = ...) -> list[QueueId]: ...

    def close(self) -> None: ...
