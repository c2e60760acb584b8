"""Queue administration: the operations behind ``pigeon queue ...``.

The same functions serve the running server (through the control socket, so the queue
manager learns about each change) and the stopped server (the CLI opens the data directory
itself). They return plain JSON-able values; the CLI formats them.

Rules:
1. Mail in an intake journal (state ``journal``, queue.store rule 12) is listed, shown,
   deleted and held like any other.
2. Running server: a journal message of the server's own fast road (``qmgr.lane``, the
   ``JournalDeliveries`` here) that is being delivered right now is refused with "try again
   in a moment"; one it holds (the queue files could not be written) is deleted (its done
   entry) or moved into ``hold/``. A message in an SMTP worker's journal is that worker's for
   the few milliseconds of its delivery: refused likewise.
3. Stopped server (the CLI holds the data directory lock): ``delete`` and ``hold`` first move
   what the journals hold into the queue files (``settle``: the recovery the next start would
   run), then act on the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pigeon.control.protocol import JSONValue
from pigeon.core.address import format_path
from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.qmgr.lane import MessageBusy
from pigeon.queue.api import QueueStore
from pigeon.queue.body import QueueWriteError
from pigeon.queue.record import QueueRecord

HEADER_PREVIEW_LIMIT = 64 * 1024  # `queue show` prints at most this much of the header section


class JournalDeliveries(Protocol):
    """Rule 2: the running server's fast road (``qmgr.lane.JournalLane``)."""

    def owns(self, qid: QueueId) -> bool: ...

    async def delete(self, qid: QueueId) -> None: ...

    async def hold(self, qid: QueueId) -> None: ...


def _qid(text: object) -> QueueId:
    s = str(text).strip().upper()
    if not is_queue_id(s):
        raise ValueError(f"not a queue id: {text!r}")
    return QueueId(s)


def summary(rec: QueueRecord, now: float) -> dict[str, JSONValue]:
    return {
        "id": rec.id,
        "state": rec.state,
        "age": max(0.0, now - rec.created),
        "created": rec.created,
        "size": rec.size,
        "sender": format_path(rec.envelope.sender),
        "recipients": [
            {"address": str(r.address), "original": str(r.original), "status": r.status,
             "last_reply": r.last_reply, "next_try": r.next_try}
            for r in rec.rcpts
        ],
    }


def list_queue(queue: QueueStore, now: float, held: Sequence[QueueRecord] = ()) -> list[JSONValue]:
    """Every queued message, oldest first: the state directories, then what the intake journals
    hold (state ``journal``: being delivered from memory right now, or held by a fast lane
    because the disk was full, queue.store rule 12). ``held`` (the running server's fast
    lane) gives those it knows their last results and next try. Blocking: it reads the
    journals' segments."""
    recs = sorted(queue.scan(("incoming", "active", "deferred", "hold")), key=lambda r: r.created)
    out: list[JSONValue] = [summary(r, now) for r in recs]
    known = {r.id: r for r in held}
    for rec in queue.journal_messages():
        entry = summary(known.get(rec.id, rec), now)
        entry["state"] = "journal"
        out.append(entry)
    return out


def show(queue: QueueStore, qid_text: object, now: float,
         held: Sequence[QueueRecord] = ()) -> dict[str, JSONValue]:
    """One message, with its envelope, history and header section (rule 1: a journal's too;
    ``held``, the running server's fast road's, gives a held one its last results). Blocking:
    a journal message is read from the segments."""
    qid = _qid(qid_text)
    rec = queue.load(qid)
    if rec.state == "journal":
        rec = next((h for h in held if h.id == qid), rec)
        rec.state = "journal"
    out = summary(rec, now)
    out["envelope"] = rec.envelope.to_json()
    out["history"] = {
        str(r.address): [{"time": a.time, "host": a.host, "reply": a.reply} for a in r.attempts]
        for r in rec.rcpts
    }
    headers = bytearray()
    with queue.open_body(qid) as f:
        while len(headers) < HEADER_PREVIEW_LIMIT:
            line = f.readline(HEADER_PREVIEW_LIMIT)
            if not line or line in (b"\r\n", b"\n"):
                break
            headers += line
    out["headers"] = headers.decode("utf-8", "replace")
    return out


def existing_id(queue: QueueStore, qid_text: object) -> QueueId:
    """The queue id, checked to name a queued message (FileNotFoundError otherwise)."""
    qid = _qid(qid_text)
    queue.load(qid)
    return qid


def settle(queue: QueueStore, qid: QueueId) -> None:
    """Rule 3 (stopped server only): a message found only in a journal is moved into the
    queue files, with everything the journals hold, as the next start would."""
    if queue.load(qid).state == "journal":
        queue.recover()


def delete(queue: QueueStore, qid_text: object) -> QueueId:
    """Stopped server (rule 3)."""
    qid = _qid(qid_text)
    settle(queue, qid)  # raises FileNotFoundError for an unknown id
    queue.remove(qid)
    return qid


def hold(queue: QueueStore, qid_text: object) -> QueueId:
    """Stopped server (rule 3)."""
    qid = _qid(qid_text)
    settle(queue, qid)
    queue.move(qid, "hold")
    return qid


def _journal_only(queue: QueueStore, lane: JournalDeliveries, qid: QueueId) -> bool:
    """Rule 2: True for a message of the server's own fast road; MessageBusy for another
    process's journal; False for a message in a state."""
    if lane.owns(qid):
        return True
    if queue.load(qid).state == "journal":
        raise MessageBusy(f"{qid} is being delivered from an SMTP worker's intake journal; "
                          "try again in a moment")
    return False


async def delete_running(queue: QueueStore, lane: JournalDeliveries, qid_text: object) -> QueueId:
    """Running server (rule 2); the caller tells the queue manager to forget it."""
    qid = _qid(qid_text)
    if _journal_only(queue, lane, qid):
        await lane.delete(qid)
        return qid
    queue.remove(qid)
    return qid


async def hold_running(queue: QueueStore, lane: JournalDeliveries, qid_text: object) -> QueueId:
    """Running server (rule 2)."""
    qid = _qid(qid_text)
    if _journal_only(queue, lane, qid):
        try:
            await lane.hold(qid)
        except QueueWriteError as exc:  # still no room for the queue files: it stays held
            raise ValueError(f"{qid} stays in the intake journal: {exc}") from exc
        return qid
    queue.move(qid, "hold")
    return qid


def release(queue: QueueStore, qid_text: object) -> QueueId:
    qid = _qid(qid_text)
    rec = queue.load(qid)
    if rec.state != "hold":
        raise ValueError(f"{qid} is not on hold")
    for r in rec.rcpts:
        if r.status == "deferred":
            r.next_try = 0.0
    queue.update_sync(rec)
    queue.move(qid, "active")
    return qid
