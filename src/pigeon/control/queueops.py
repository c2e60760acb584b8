"""Queue administration: the operations behind ``pigeon queue ...``.

The same functions serve the running server (through the control socket, so the queue
manager learns about each change) and the stopped server (the CLI opens the data directory
itself). They return plain JSON-able values; the CLI formats them.
"""

from __future__ import annotations

from collections.abc import Sequence

from pigeon.control.protocol import JSONValue
from pigeon.core.address import format_path
from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.queue.api import QueueStore
from pigeon.queue.record import QueueRecord

HEADER_PREVIEW_LIMIT = 64 * 1024  # `queue show` prints at most this much of the header section


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


def show(queue: QueueStore, qid_text: object, now: float) -> dict[str, JSONValue]:
    qid = _qid(qid_text)
    rec = queue.load(qid)
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


def delete(queue: QueueStore, qid_text: object) -> QueueId:
    qid = _qid(qid_text)
    queue.load(qid)  # raises FileNotFoundError for an unknown id
    queue.remove(qid)
    return qid


def hold(queue: QueueStore, qid_text: object) -> QueueId:
    qid = _qid(qid_text)
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
