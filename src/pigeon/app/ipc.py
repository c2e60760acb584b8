"""The messages between the server (``app.master``) and its worker processes (``app.worker``):
typed, versioned, and checked in this one module before anyone acts on them.

The channel is two pipes per worker, one JSON object per line: the worker's standard output
carries worker → server messages, its standard input server → worker ones (and its end of
file tells the worker that the server is gone). Every message is a frozen dataclass here;
``encode`` turns one into a line, a ``Reader`` turns a byte stream back into messages.

Messages (``op`` on the wire, then the fields):

====================  ==========  =================================================================
message               direction   meaning
====================  ==========  =================================================================
``Hello``             both        first line each way: ``version`` (``IPC_VERSION``), ``pid``
``Ready``             worker →    it listens for ``services`` and handles SIGUSR1 from now on
``Schedule``          worker →    ``id`` is in the queue files: the queue manager takes it
``Complete``          worker →    ``id`` is in the queue files after an attempt; ``results``, one
                                  per recipient, are recorded as the queue manager's own
``Changed``           both        the mail folder ``dir`` changed (a delivery, an IMAP session's
                                  STORE/APPEND/EXPUNGE…): worker → server, which wakes its own
                                  sessions and passes it on, server → every other IMAP worker
                                  (wakes IDLE; a hint, the session syncs with the store)
``Counters``          worker →    all its metrics counts so far (``pid``, ``values``: [name,
                                  [labels], value]), every few seconds (``pigeon.web.metrics``)
====================  ==========  =================================================================

Rules:
1. **Version.** ``IPC_VERSION`` is an integer, bumped whenever a message, a field, or its
   meaning changes in a way the other side could misread (a new message too: an old peer would
   drop it). There is no negotiation: server and workers run from the same installation, so a
   different version means the code was replaced under a running server. Each side sends
   ``Hello`` first and refuses a peer whose ``Hello`` carries another version (``check_hello``),
   or whose first line is not a ``Hello``: logged, the worker ended; restart the server.
2. **Validation.** A line becomes a message only if it is UTF-8 JSON, an object, with a known
   ``op`` for its direction and exactly that message's fields, each of the right type and in
   range: queue ids pass ``is_queue_id`` (never a path), addresses ``parse_address``, reply
   codes 200–599 with an RFC 3463 enhanced code, a directory is an absolute path. Anything
   else raises ``IpcError`` with the reason, which the reader logs; the line is skipped, never
   a crash. (What a message names is checked again where it is used: a queue id must be
   queued, each result must name one of that message's recipients, ``app.hub``.)
3. **Length.** A line is at most ``MAX_LINE`` octets with its newline; a longer one is refused
   once and skipped up to the next newline, so the stream stays in step. ``encode`` refuses to
   write one (``IpcError``): the sender then falls back (``app.worker``: a ``Complete`` too
   large becomes a ``Schedule``, the message is attempted again by the server).
4. Messages are hints about mail that is already durable: each one names mail in the queue
   files, which the server reads from there, never from the pipe. A refused line delays a
   message until the next start at the latest; it never loses one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pigeon.core.address import AddressError, parse_address
from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.core.results import RecipientResult, Status
from pigeon.core.reply import Reply

IPC_VERSION = 3  # 2: Counters; 3: Changed also goes server → worker (IMAP workers, issue 18)
# Rule 3. A result is at most about 360 octets (a 256-octet address, a local delivery's reply),
# so a ``Complete`` for 1,000 recipients (``[limits] max_recipients``'s default) fits in about
# 360 KiB, and one for up to ~2,900 in 1 MiB; past that, rule 3's fallback attempts the message
# again (at least once, as everywhere). The bound is also what one line can make the server buffer.
MAX_LINE = 1024 * 1024
MAX_PATH = 4096  # Linux PATH_MAX, with its NUL
MAX_SERVICES = 16  # more than every service Pigeon has
MAX_REPLY_LINES = 100  # a multi-line reply longer than this is not a delivery result
MAX_HOST = 1024  # "mx.example.net[2001:db8::1]:25", with room
# Counters: the metrics have a closed set of label values (pigeon.web.metrics rule 4), a few
# hundred series at most; these bounds are far above that and bound what one line can hold.
MAX_COUNTERS = 4096
MAX_LABELS = 4
MAX_LABEL = 64
MAX_PID = 2**22  # Linux pid_max's upper bound (PID_MAX_LIMIT)
_METRIC = re.compile(r"pigeon_[a-z_]{1,64}")
SNIPPET = 120  # octets of a refused line quoted in its log line

_SERVICE = re.compile(r"[a-z][a-z0-9]{0,15}")
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")  # RFC 3463 §2
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATUSES: dict[str, Status] = {"delivered": "delivered", "deferred": "deferred", "failed": "failed"}


class IpcError(ValueError):
    """A line refused (rule 2, 3) or a peer refused (rule 1); the text says why."""


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    pid: int


@dataclass(frozen=True, slots=True)
class Ready:
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Schedule:
    queue_id: QueueId


@dataclass(frozen=True, slots=True)
class Complete:
    queue_id: QueueId
    results: tuple[RecipientResult, ...]


@dataclass(frozen=True, slots=True)
class Changed:
    directory: str


@dataclass(frozen=True, slots=True)
class Counters:
    pid: int
    values: tuple[tuple[str, tuple[str, ...], float], ...]


Notice = Schedule | Complete | Changed | Counters  # what a worker tells about mail, past the handshake
WorkerMessage = Hello | Ready | Notice
MasterMessage = Hello | Changed
Message = WorkerMessage | MasterMessage
M = TypeVar("M")


def hello() -> Hello:
    """This side's first line (rule 1)."""
    return Hello(IPC_VERSION, os.getpid())


def check_hello(msg: Message | None) -> Hello:
    """Rule 1: the peer's first message must be a ``Hello`` of this version."""
    if not isinstance(msg, Hello):
        raise IpcError(f"first message {type(msg).__name__ if msg is not None else 'none'} instead of hello")
    if msg.version != IPC_VERSION:
        raise IpcError(f"peer pid={msg.pid} speaks ipc version {msg.version}, this side {IPC_VERSION}")
    return msg


# -- encoding ---------------------------------------------------------------------------------

def _result(res: RecipientResult) -> dict[str, object]:
    return {"rcpt": str(res.recipient), "status": res.status, "code": res.reply.code,
            "enhanced": res.reply.enhanced, "text": list(res.reply.lines), "host": res.host}


def _fields(msg: Message) -> dict[str, object]:
    if isinstance(msg, Hello):
        return {"op": "hello", "version": msg.version, "pid": msg.pid}
    if isinstance(msg, Ready):
        return {"op": "ready", "services": list(msg.services)}
    if isinstance(msg, Schedule):
        return {"op": "schedule", "id": msg.queue_id}
    if isinstance(msg, Complete):
        return {"op": "complete", "id": msg.queue_id, "results": [_result(r) for r in msg.results]}
    if isinstance(msg, Counters):
        return {"op": "counters", "pid": msg.pid,
                "values": [[name, list(labels), value] for name, labels, value in msg.values]}
    return {"op": "changed", "dir": msg.directory}


def encode(msg: Message) -> bytes:
    """One line, newline included. Raises ``IpcError`` over ``MAX_LINE`` (rule 3)."""
    line = json.dumps(_fields(msg), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise IpcError(f"{type(msg).__name__} of {len(line)} octets is over the line limit {MAX_LINE}")
    return line


# -- decoding (rule 2) ------------------------------------------------------------------------

def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _object(line: bytes) -> dict[str, object]:
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise IpcError("not UTF-8") from None
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the parser's depth
        raise IpcError("not JSON") from None
    if not isinstance(obj, dict):
        raise IpcError("not a JSON object")
    return obj


def _exact(obj: dict[str, object], op: str, names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in obj]
    extra = sorted(set(obj) - {"op", *names})
    if missing or extra:
        raise IpcError(f"{op}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) +
            ([f"unknown field {', '.join(extra)}"] if extra else [])))


def _int(obj: dict[str, object], op: str, name: str, low: int, high: int) -> int:
    value = obj[name]
    if type(value) is not int or not low <= value <= high:  # bool is not an int here
        raise IpcError(f"{op}: {name} is not an integer in {low}..{high}")
    return value


def _str(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise IpcError(f"{what} is not a string of at most {limit} characters")
    return value


def _queue_id(obj: dict[str, object], op: str) -> QueueId:
    value = obj["id"]
    if not isinstance(value, str) or len(value) != 16 or not is_queue_id(value):
        raise IpcError(f"{op}: id is not a queue id")
    return QueueId(value)


def _decode_result(item: object) -> RecipientResult:
    if not isinstance(item, dict):
        raise IpcError("complete: a result is not an object")
    _exact(item, "complete result", ("rcpt", "status", "code", "enhanced", "text", "host"))
    try:
        rcpt = parse_address(_str(item["rcpt"], "complete: rcpt", 512), utf8=True)
    except AddressError as exc:
        raise IpcError(f"complete: rcpt: {exc}") from None
    status = _STATUSES.get(item["status"]) if isinstance(item["status"], str) else None
    if status is None:
        raise IpcError("complete: status is not delivered, deferred or failed")
    code = _int(item, "complete", "code", 200, 599)
    enhanced = _str(item["enhanced"], "complete: enhanced", 11)
    if enhanced and not _ENHANCED.fullmatch(enhanced):
        raise IpcError("complete: enhanced is not an RFC 3463 status code")
    raw = item["text"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_REPLY_LINES:
        raise IpcError(f"complete: text is not a list of 1..{MAX_REPLY_LINES} lines")
    lines = tuple(_str(x, "complete: a text line", MAX_LINE) for x in raw)
    host = _str(item["host"], "complete: host", MAX_HOST)
    if any(_CONTROL.search(x) for x in (*lines, host)):
        raise IpcError("complete: control characters in a reply or host")
    text: str | tuple[str, ...] = lines[0] if len(lines) == 1 else lines
    return RecipientResult(rcpt, status, Reply(code, enhanced, text), host)


def _decode_hello(obj: dict[str, object]) -> Hello:
    _exact(obj, "hello", ("version", "pid"))
    return Hello(_int(obj, "hello", "version", 0, 2**31 - 1), _int(obj, "hello", "pid", 1, 2**31 - 1))


def _decode_ready(obj: dict[str, object]) -> Ready:
    _exact(obj, "ready", ("services",))
    raw = obj["services"]
    if not (isinstance(raw, list) and 1 <= len(raw) <= MAX_SERVICES
            and all(isinstance(s, str) and _SERVICE.fullmatch(s) for s in raw)):
        raise IpcError("ready: services is not a list of service names")
    return Ready(tuple(str(s) for s in raw))


def _decode_schedule(obj: dict[str, object]) -> Schedule:
    _exact(obj, "schedule", ("id",))
    return Schedule(_queue_id(obj, "schedule"))


def _decode_complete(obj: dict[str, object]) -> Complete:
    _exact(obj, "complete", ("id", "results"))
    qid = _queue_id(obj, "complete")
    raw = obj["results"]
    if not isinstance(raw, list) or not raw:
        raise IpcError("complete: results is not a non-empty list")
    return Complete(qid, tuple(_decode_result(item) for item in raw))


def _decode_counters(obj: dict[str, object]) -> Counters:
    _exact(obj, "counters", ("pid", "values"))
    pid = _int(obj, "counters", "pid", 1, MAX_PID)
    items = obj["values"]
    if not isinstance(items, list) or len(items) > MAX_COUNTERS:
        raise IpcError(f"counters: values is not a list of at most {MAX_COUNTERS}")
    out: list[tuple[str, tuple[str, ...], float]] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and _METRIC.fullmatch(item[0]) and isinstance(item[1], list) and len(item[1]) <= MAX_LABELS
                and all(isinstance(v, str) and len(v) <= MAX_LABEL for v in item[1])
                and isinstance(item[2], (int, float)) and not isinstance(item[2], bool)
                and 0 <= item[2] < float("inf")):
            raise IpcError("counters: a value is not [name, [labels], count]")
        out.append((item[0], tuple(item[1]), float(item[2])))
    return Counters(pid, tuple(out))


def _decode_changed(obj: dict[str, object]) -> Changed:
    _exact(obj, "changed", ("dir",))
    path = _str(obj["dir"], "changed: dir", MAX_PATH)
    if not path.startswith("/") or "\x00" in path:
        raise IpcError("changed: dir is not an absolute path")
    return Changed(path)


_FROM_WORKER: dict[str, Callable[[dict[str, object]], WorkerMessage]] = {
    "hello": _decode_hello, "ready": _decode_ready, "schedule": _decode_schedule,
    "complete": _decode_complete, "changed": _decode_changed, "counters": _decode_counters,
}
_FROM_MASTER: dict[str, Callable[[dict[str, object]], MasterMessage]] = {
    "hello": _decode_hello, "changed": _decode_changed,
}


def _dispatch(line: bytes, table: dict[str, Callable[[dict[str, object]], M]], direction: str) -> M:
    obj = _object(line)
    op = obj.get("op")
    decoder = table.get(op) if isinstance(op, str) else None
    if decoder is None:
        raise IpcError(f"unknown op {op!r} {direction}")
    return decoder(obj)


def decode_from_worker(line: bytes) -> WorkerMessage:
    """One line (without its newline) a worker wrote. Raises ``IpcError`` (rule 2)."""
    return _dispatch(line, _FROM_WORKER, "from a worker")


def decode_from_master(line: bytes) -> MasterMessage:
    """One line (without its newline) the server wrote. Raises ``IpcError`` (rule 2)."""
    return _dispatch(line, _FROM_MASTER, "from the server")


# -- framing (rule 3) -------------------------------------------------------------------------


def _snippet(line: bytes) -> str:
    return repr(line[:SNIPPET]) + ("…" if len(line) > SNIPPET else "")


class Reader(Generic[M]):
    """Bytes from a pipe → messages, or ``IpcError`` for each line refused (never raises)."""

    def __init__(self, decode: Callable[[bytes], M], max_line: int = MAX_LINE) -> None:
        self._decode = decode
        self._max = max_line
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line already reported

    def feed(self, data: bytes) -> list[M | IpcError]:
        out: list[M | IpcError] = []
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            piece = data[start:nl]
            start = nl + 1
            if self._skipping:
                self._skipping = False
                continue
            if self._buf:
                piece = bytes(self._buf) + piece
                self._buf.clear()
            out.append(self._one(piece))
        if start < len(data) and not self._skipping:
            self._buf += data[start:]
            if len(self._buf) >= self._max:  # no newline within the limit: rule 3
                out.append(IpcError(f"line over {self._max} octets, skipped: {_snippet(bytes(self._buf))}"))
                self._buf.clear()
                self._skipping = True
        return out

    def end(self) -> list[IpcError]:
        """End of file: a last line without its newline is refused (a writer cut short)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return [IpcError(f"line cut short at end of file: {_snippet(rest)}")] if rest else []

    def _one(self, line: bytes) -> M | IpcError:
        if len(line) + 1 > self._max:
            return IpcError(f"line of {len(line) + 1} octets over {self._max}, skipped: {_snippet(line)}")
        try:
            return self._decode(line)
        except IpcError as exc:
            return IpcError(f"{exc}: {_snippet(line)}")


def worker_reader(max_line: int = MAX_LINE) -> Reader[WorkerMessage]:
    """The server's reader of one worker's standard output."""
    return Reader(decode_from_worker, max_line)


def master_reader(max_line: int = MAX_LINE) -> Reader[MasterMessage]:
    """A worker's reader of its standard input."""
    return Reader(decode_from_master, max_line)
