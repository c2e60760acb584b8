"""Start-up recovery of the queue directory: run before any listener opens.

Rules (the recovery half of docs/queue.md):
1. ``tmp/`` holds only work that never reached the commit point, and emptied files kept for
   reuse (``recycle.FilePool``): everything in it is deleted.
2. ``incoming/`` records were never committed (no 250 was given): they and their bodies are
   deleted.
3. A record in ``active/``, ``deferred/`` or ``hold/`` that cannot be read or parsed, has an
   unknown format version, or has no body, is moved (with its body, if any) to ``corrupt/`` and
   reported with a log line; it is never deleted, so the operator can look at it.
4. A file whose name is not a queue id is moved to ``corrupt/`` unopened.
5. A body in ``msg/`` with no record in any state is the remains of a receive that never
   committed (or of a removal cut short after its record was gone): it is deleted.
6. A record found in two states with the same bytes is one message whose move between states
   (``QueueStore.move``: rename, then both directories fsynced) was cut short by a crash on a
   file system that wrote one directory and not the other: the name in the later state of the
   scan (``active``, ``deferred``, ``hold``) is removed and the message kept once. Different
   bytes under one id in two states go to ``corrupt/`` (rule 3).
7. The ids in ``active/`` and ``deferred/`` are returned for the queue manager to schedule;
   ``hold/`` ids are reported but not scheduled.
8. Every directory is fsynced at the end, before anything new is accepted: the clean-up is
   durable, so a crash soon after cannot bring back a half-committed message beside new ones.
   Every call goes through the IO seam (``durable.io``) given.

What can go wrong: an ``OSError`` on the queue directory itself propagates (the server must not
start on a queue it cannot read); errors on single files are logged and that file is skipped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.durable.io import REAL, FileIO, unlink_quietly
from pigeon.queue.record import CorruptRecord, State, decode_record

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecoveryReport:
    active: list[QueueId] = field(default_factory=list)
    deferred: list[QueueId] = field(default_factory=list)
    hold: list[QueueId] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # names moved to corrupt/ this time
    orphans_removed: list[str] = field(default_factory=list)  # bodies without a record
    incoming_removed: list[str] = field(default_factory=list)
    tmp_removed: int = 0
    journal: list[QueueId] = field(default_factory=list)  # moved from the intake journal to active/

    @property
    def to_schedule(self) -> list[QueueId]:
        """Rule 6: what the queue manager should pick up."""
        return [*self.active, *self.deferred]


def _move_aside(src: Path, corrupt_dir: Path, name: str, io: FileIO) -> bool:
    """Move ``src`` to ``corrupt/name`` without overwriting anything already there."""
    target = corrupt_dir / name
    n = 1
    while target.exists():
        target = corrupt_dir / f"{name}.{n}"
        n += 1
    try:
        io.rename(src, target)
        return True
    except OSError as exc:
        log.error("queue recovery: cannot move %s to %s: %s", src, target, exc)
        return False


def recover_queue(root: Path, io: FileIO = REAL) -> RecoveryReport:
    report = RecoveryReport()
    corrupt_dir = root / "corrupt"

    for name in os.listdir(root / "tmp"):  # rule 1
        if unlink_quietly(root / "tmp" / name, io):
            report.tmp_removed += 1
    if report.tmp_removed:
        log.info("queue recovery: removed %d unfinished files from tmp/", report.tmp_removed)

    for name in sorted(os.listdir(root / "incoming")):  # rule 2
        unlink_quietly(root / "incoming" / name, io)
        if is_queue_id(name):
            unlink_quietly(root / "msg" / name, io)
        report.incoming_removed.append(name)
        log.info("queue recovery: removed uncommitted %s from incoming/", name)

    live: dict[str, Path] = {}  # queue id -> its record
    for state in ("active", "deferred", "hold"):
        _recover_state(root, state, report, live, io)

    for name in sorted(os.listdir(root / "msg")):  # rule 5
        if not is_queue_id(name):
            log.warning("queue recovery: foreign file msg/%s moved to corrupt/", name)
            if _move_aside(root / "msg" / name, corrupt_dir, name, io):
                report.corrupt.append(name)
        elif name not in live:
            if unlink_quietly(root / "msg" / name, io):
                report.orphans_removed.append(name)
                log.info("queue recovery: removed orphan body %s (never committed)", name)

    for sub in ("tmp", "incoming", "msg", "active", "deferred", "hold", "corrupt"):
        io.fsync_dir(root / sub)  # rule 8
    log.info(
        "queue recovery: %d active, %d deferred, %d held, %d corrupt, %d orphan bodies removed",
        len(report.active),
        len(report.deferred),
        len(report.hold),
        len(report.corrupt),
        len(report.orphans_removed),
    )
    return report


def _recover_state(root: Path, state: State, report: RecoveryReport, live: dict[str, Path], io: FileIO) -> None:
    corrupt_dir = root / "corrupt"
    ids = {"active": report.active, "deferred": report.deferred, "hold": report.hold}[state]
    for name in sorted(os.listdir(root / state)):
        path = root / state / name
        if not is_queue_id(name):  # rule 4
            log.warning("queue recovery: foreign file %s/%s moved to corrupt/", state, name)
            if _move_aside(path, corrupt_dir, name, io):
                report.corrupt.append(name)
            continue
        qid = QueueId(name)
        body = root / "msg" / name
        problem = ""
        if name in live:
            if _same_bytes(path, live[name]):  # rule 6: a move cut short
                log.info("queue recovery: %s is in %s/ and %s/ (a move cut short); kept in %s/",
                         name, live[name].parent.name, state, live[name].parent.name)
                unlink_quietly(path, io)
                continue
            problem = "a record with this id is already in another state"
        else:
            try:
                decode_record(path.read_bytes(), qid, state)
                if not body.exists():
                    problem = "its body is missing"
            except (OSError, CorruptRecord) as exc:
                problem = str(exc)
        if not problem:
            live[name] = path
            ids.append(qid)
            continue
        log.error("queue recovery: record %s/%s moved to corrupt/: %s", state, name, problem)  # rule 3
        if _move_aside(path, corrupt_dir, name, io):
            report.corrupt.append(name)
        if body.exists() and name not in live:
            _move_aside(body, corrupt_dir, f"{name}.body", io)


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False
