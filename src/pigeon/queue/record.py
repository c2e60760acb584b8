"""Queue records: the envelope and per-recipient state of one queued message, and their JSON form.

A queued message is two files: the body ``msg/<id>`` (the exact bytes to deliver) and the
envelope record ``<state>/<id>`` (this module's JSON). The queue state is *where* the record is
(Postfix style), so the state is not stored inside the record.

Rules:
1. Every record carries ``"version": RECORD_VERSION``. A record with any other version, or one
   that does not parse, is ``CorruptRecord``: the store moves it to ``corrupt/`` and reports it;
   it is never guessed at.
2. A recipient is ``pending`` (not tried yet), ``deferred`` (tried, temporary failure, will be
   retried at ``next_try``), ``delivered`` or ``failed`` (both final). ``pending()`` returns the
   recipients still to deliver (pending or deferred); ``done`` is true when none are left.
3. ``RcptState.address`` is the final address (after alias expansion); ``original`` is the
   address as given at RCPT TO, which DSNs report (RFC 3464 §2.3.1 Original-Recipient).
4. Decoding never trusts the file: every field is type-checked, so a damaged record raises
   ``CorruptRecord`` instead of ``KeyError``/``TypeError`` deep inside the queue manager.

What can go wrong: ``decode_record`` raises ``CorruptRecord`` for unreadable JSON, a wrong
version or a field of the wrong type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from pigeon.core.address import Address, AddressError, parse_address
from pigeon.core.envelope import Envelope
from pigeon.core.queueid import QueueId, is_queue_id

RECORD_VERSION = 1  # bump when the JSON layout changes; old versions are then converted or refused

# "journal": committed to an intake journal and not yet in a state directory (queue.store
# rule 8); such a record is never written to a directory of its own, so STATES leaves it out.
State = Literal["incoming", "active", "deferred", "hold", "corrupt", "journal"]
RcptStatus = Literal["pending", "delivered", "failed", "deferred"]

STATES: tuple[State, ...] = ("incoming", "active", "deferred", "hold", "corrupt")
_RCPT_STATUSES: tuple[RcptStatus, ...] = ("pending", "delivered", "failed", "deferred")


class QueueError(Exception):
    """Base of the queue's own errors."""


class CorruptRecord(QueueError, ValueError):
    """The record file cannot be turned back into a QueueRecord."""


@dataclass(slots=True)
class Attempt:
    """One delivery attempt for one recipient."""

    time: float
    host: str
    reply: str  # the reply as text, "451 4.3.0 Local error in processing"


@dataclass(slots=True)
class RcptState:
    address: Address
    original: Address
    notify: tuple[str, ...] = ()
    orcpt: str | None = None
    status: RcptStatus = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    next_try: float = 0.0
    last_reply: str = ""


@dataclass(slots=True)
class QueueRecord:
    id: QueueId
    envelope: Envelope
    created: float
    size: int
    state: State
    rcpts: list[RcptState]
    delay_warned: bool = False

    def pending(self) -> list[RcptState]:
        """Recipients still to deliver: never tried, or deferred (rule 2)."""
        return [r for r in self.rcpts if r.status in ("pending", "deferred")]

    @property
    def done(self) -> bool:
        return not self.pending()


# One encoder for every record: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_record(record: QueueRecord) -> bytes:
    """The record as JSON bytes (UTF-8, one line, newline-terminated)."""
    doc: dict[str, object] = {
        "version": RECORD_VERSION,
        "id": record.id,
        "created": record.created,
        "size": record.size,
        "delay_warned": record.delay_warned,
        "envelope": record.envelope.to_json(),
        "rcpts": [
            {
                "address": str(r.address),
                "original": str(r.original),
                "notify": list(r.notify),
                "orcpt": r.orcpt,
                "status": r.status,
                "attempts": [{"time": a.time, "host": a.host, "reply": a.reply} for a in r.attempts],
                "next_try": r.next_try,
                "last_reply": r.last_reply,
            }
            for r in record.rcpts
        ],
    }
    return _ENCODER.encode(doc).encode("utf-8") + b"\n"


def _number(d: dict[str, object], key: str) -> float:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CorruptRecord(f"field {key!r}: expected a number")
    return float(value)


def _int(d: dict[str, object], key: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorruptRecord(f"field {key!r}: expected an integer")
    return value


def _text(d: dict[str, object], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise CorruptRecord(f"field {key!r}: expected a string")
    return value


def _list(d: dict[str, object], key: str) -> list[object]:
    value = d.get(key)
    if not isinstance(value, list):
        raise CorruptRecord(f"field {key!r}: expected a list")
    return list(value)


def _dict(value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise CorruptRecord(f"{what}: expected an object")
    return {str(k): v for k, v in value.items()}


def _address(text: str) -> Address:
    try:
        return parse_address(text, utf8=True)
    except AddressError as exc:
        raise CorruptRecord(f"bad address {text!r}: {exc}") from exc


def _decode_rcpt(value: object) -> RcptState:
    d = _dict(value, "recipient")
    status = _text(d, "status")
    if status not in _RCPT_STATUSES:
        raise CorruptRecord(f"unknown recipient status {status!r}")
    notify = _list(d, "notify")
    attempts = []
    for a in _list(d, "attempts"):
        ad = _dict(a, "attempt")
        attempts.append(Attempt(_number(ad, "time"), _text(ad, "host"), _text(ad, "reply")))
    orcpt = d.get("orcpt")
    if orcpt is not None and not isinstance(orcpt, str):
        raise CorruptRecord("field 'orcpt': expected a string")
    return RcptState(
        address=_address(_text(d, "address")),
        original=_address(_text(d, "original")),
        notify=tuple(str(n) for n in notify),
        orcpt=orcpt,
        status=status,  # narrowed by the check against _RCPT_STATUSES
        attempts=attempts,
        next_try=_number(d, "next_try"),
        last_reply=_text(d, "last_reply"),
    )


def decode_record(data: bytes, qid: QueueId, state: State) -> QueueRecord:
    """Parse a record file's bytes; raises CorruptRecord (rule 1, rule 4)."""
    try:
        doc = _dict(json.loads(data.decode("utf-8")), "record")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRecord(f"unreadable JSON: {exc}") from exc
    version = doc.get("version")
    if version != RECORD_VERSION or isinstance(version, bool):
        raise CorruptRecord(f"unknown record version {version!r}")
    rid = _text(doc, "id")
    if rid != qid or not is_queue_id(rid):
        raise CorruptRecord(f"record id {rid!r} does not match its file name {qid!r}")
    try:
        # Envelope.from_json (core) validates with assert; catch what it can raise.
        envelope = Envelope.from_json(_dict(doc.get("envelope"), "envelope"))
    except (AddressError, KeyError, TypeError, ValueError, AssertionError, AttributeError) as exc:
        raise CorruptRecord(f"bad envelope: {exc}") from exc
    delay_warned = doc.get("delay_warned", False)
    if not isinstance(delay_warned, bool):
        raise CorruptRecord("field 'delay_warned': expected a boolean")
    return QueueRecord(
        id=qid,
        envelope=envelope,
        created=_number(doc, "created"),
        size=_int(doc, "size"),
        state=state,
        rcpts=[_decode_rcpt(r) for r in _list(doc, "rcpts")],
        delay_warned=delay_warned,
    )
