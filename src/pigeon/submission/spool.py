"""Local submission (the ``sendmail`` command): the maildrop spool and its way into the queue.

``pigeon sendmail`` writes the prepared message (line ends fixed, Bcc removed, From: added)
to a file in ``data_dir/maildrop/`` and then either asks the running server to queue it over the
control socket (``sendmail.submit``, handled by ``make_submit_handler``) or, when no server
runs, queues it itself through cleanup (``queue_spooled`` + ``Transaction.commit_sync``). Either
way the same ``Intake`` path applies the submission fix-ups (Message-ID, Date) and the commit
point; the control message carries only the envelope and the file name, so a message of any
size crosses the socket in one short line (the socket's lines are bounded, the file by the
configured message size).

Rules:
1. The maildrop directory is ``data_dir/maildrop`` (mode 0700). Files are created by the
   command with ``O_EXCL`` and mode 0600, named ``<digits>-<pid>-<hex>.msg``. The server opens
   only names matching that pattern, inside that directory: a control request can never make
   it read another file.
2. The command owns its file: it removes it once the message is queued or refused, whichever
   path it took. ``sweep_maildrop`` removes files older than ``MAILDROP_MAX_AGE`` (left by a
   command that was killed).
3. The message is queued only when ``commit`` returns: the command reports success (exit 0)
   only after the queue's commit point, as the SMTP server answers 250 only then.
4. The envelope comes from the command: null sender as ``""``, recipients as text, DSN
   ``notify``/``ret``/``envid``, ``body`` (7BIT or 8BITMIME) and ``smtputf8``. The client is
   ``ClientInfo("local", protocol="local", authenticated_as=<unix user>)``, so ``Received:``
   says ``from userid``.

What can go wrong: a bad request raises ``ValueError`` (the control server answers it as an
error); refusals from cleanup or the queue are answered as ``{"status": "permanent"|"temporary",
"reply": ...}``, never raised.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pigeon.cleanup.intake import Intake, Transaction
from pigeon.core.address import Address, AddressError, parse_address
from pigeon.core.envelope import BodyType, ClientInfo, Envelope, Recipient
from pigeon.core.results import MailError, PermanentError
from pigeon.queue.record import QueueRecord

log = logging.getLogger(__name__)

# The control socket's value type (pigeon.control.protocol.JSONValue), restated here because
# submission sits below control in the layers and may not import it.
JSONValue = object

MAILDROP_DIR = "maildrop"  # under data_dir
_NAME = re.compile(r"^[0-9]{1,20}-[0-9]{1,10}-[0-9a-f]{16}\.msg$")
# A command killed mid-write leaves its file; a day is far longer than any submission takes.
MAILDROP_MAX_AGE = 24 * 3600.0
# Read the file in the queue's own write granularity: large enough for few syscalls, small
# enough to keep memory flat (the body is never held whole).
READ_CHUNK = 64 * 1024
# RFC 5321 §4.5.3.1.8 asks at least 100 recipients of a server; a local command listing more
# than this many is a mistake or an abuse. Matches the default [limits] max_recipients.
MAX_LOCAL_RECIPIENTS = 1000


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """What the command tells the server (rule 4)."""

    name: str  # file name in the maildrop directory
    sender: Address | None
    recipients: tuple[Address, ...]
    user: str
    body: BodyType = "7BIT"
    smtputf8: bool = False
    notify: tuple[str, ...] = ()
    ret: str | None = None
    envid: str | None = None

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "file": self.name,
            "sender": str(self.sender) if self.sender is not None else "",
            "recipients": [str(r) for r in self.recipients],
            "user": self.user,
            "body": self.body,
            "smtputf8": self.smtputf8,
            "notify": list(self.notify),
            "ret": self.ret,
            "envid": self.envid,
        }

    @staticmethod
    def from_json(args: dict[str, JSONValue]) -> SpooledMessage:
        """Validate a control request; raises ValueError naming the problem."""
        name = str(args.get("file", ""))
        if not _NAME.match(name):
            raise ValueError(f"not a maildrop file name: {name[:80]!r}")  # rule 1
        recipients = args.get("recipients")
        if not isinstance(recipients, list) or not recipients or len(recipients) > MAX_LOCAL_RECIPIENTS:
            raise ValueError(f"recipients must be a list of 1 to {MAX_LOCAL_RECIPIENTS} addresses")
        notify = args.get("notify") or []
        if not isinstance(notify, list):
            raise ValueError("notify must be a list")
        body = str(args.get("body") or "7BIT")
        if body not in ("7BIT", "8BITMIME"):
            raise ValueError(f"body must be 7BIT or 8BITMIME, not {body[:20]!r}")
        ret = args.get("ret")
        if ret not in (None, "FULL", "HDRS"):
            raise ValueError("ret must be FULL or HDRS")
        envid = args.get("envid")
        sender = str(args.get("sender") or "")
        try:
            return SpooledMessage(
                name=name,
                sender=parse_address(sender, utf8=True) if sender else None,
                recipients=tuple(parse_address(str(r), utf8=True) for r in recipients),
                user=str(args.get("user") or "unknown")[:64],
                body="8BITMIME" if body == "8BITMIME" else "7BIT",
                smtputf8=bool(args.get("smtputf8")),
                notify=tuple(str(n).upper() for n in notify),
                ret=str(ret) if ret is not None else None,
                envid=str(envid)[:100] if envid is not None else None,
            )
        except AddressError as exc:
            raise ValueError(f"bad address: {exc}") from None


def maildrop_dir(data_dir: Path) -> Path:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as the server makes it
    path = data_dir / MAILDROP_DIR
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def new_maildrop_file(directory: Path) -> tuple[str, int]:
    """Create an empty maildrop file (rule 1); returns its name and an open descriptor."""
    name = f"{time.time_ns()}-{os.getpid()}-{os.urandom(8).hex()}.msg"
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return name, fd


def sweep_maildrop(directory: Path, now: float) -> int:
    """Rule 2: remove abandoned files; returns how many."""
    removed = 0
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return 0
    for path in entries:
        if not _NAME.match(path.name):
            continue
        try:
            if now - path.stat().st_mtime > MAILDROP_MAX_AGE:
                path.unlink()
                removed += 1
                log.info("maildrop: removed abandoned %s", path.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("maildrop: cannot remove %s: %s", path, exc)
    return removed


def open_transaction(intake: Intake, directory: Path, message: SpooledMessage) -> Transaction:
    """Begin a cleanup transaction for ``message`` and stream its file in (rules 3-4).
    The caller commits (``commit`` or ``commit_sync``). Raises MailError, or OSError when the
    file cannot be read."""
    envelope = Envelope(
        sender=message.sender,
        body=message.body,
        smtputf8=message.smtputf8,
        ret="FULL" if message.ret == "FULL" else "HDRS" if message.ret == "HDRS" else None,
        envid=message.envid,
        client=ClientInfo("local", "", "local", message.user, None),
    )
    txn = intake.begin(envelope, add_missing_headers=True)  # RFC 6409 §8.2, §8.3
    try:
        for rcpt in message.recipients:
            txn.add_rcpt(Recipient(rcpt, message.notify))
        with open(directory / message.name, "rb") as f:
            while chunk := f.read(READ_CHUNK):
                txn.write(chunk)
    except BaseException:
        txn.abort()
        raise
    return txn


def queued(record: QueueRecord) -> dict[str, JSONValue]:
    """The answer for a queued message."""
    return {"status": "queued", "id": record.id}


def refused(error: MailError) -> dict[str, JSONValue]:
    """The answer for a message cleanup or the queue refused."""
    kind = "permanent" if isinstance(error, PermanentError) or error.reply.is_permanent else "temporary"
    return {"status": kind, "reply": str(error.reply)}


def make_submit_handler(
    intake: Intake, data_dir: Path, on_queued: Callable[[QueueRecord], None]
) -> Callable[[dict[str, JSONValue]], Awaitable[JSONValue]]:
    """The ``sendmail.submit`` control command of the running server."""
    directory = maildrop_dir(data_dir)

    async def submit(args: dict[str, JSONValue]) -> JSONValue:
        message = SpooledMessage.from_json(args)
        try:
            txn = open_transaction(intake, directory, message)
            record = await txn.commit()
        except MailError as exc:
            log.warning("sendmail from %s refused: %s", message.user, exc.reply)
            return refused(exc)
        except FileNotFoundError:
            raise ValueError(f"maildrop file {message.name} is gone") from None
        log.info("%s: queued from local user %s (sendmail), %d recipient(s)", record.id, message.user,
                 len(message.recipients))
        on_queued(record)
        return queued(record)

    return submit
