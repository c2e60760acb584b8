"""The bounce stage: delivery status notifications (RFC 3464, RFC 6522, RFC 3461) into the queue.

The queue manager calls ``Bouncer.bounce`` for recipients that failed for good,
``delay_warning`` for recipients still being retried after a while, and ``success`` for
recipients that asked for NOTIFY=SUCCESS. Each call makes at most one notice per message per
event (plus, optionally, a copy for the postmaster), built by ``compose`` and queued through
cleanup like any other message.

Rules:
1. NOTIFY is honoured per recipient (RFC 3461 §4.1): NEVER → no notice; not given → failures
   and delays are reported; otherwise only the listed events (FAILURE, DELAY, SUCCESS).
2. A notice is sent with the null reverse path ``<>`` (RFC 5321 §4.5.5, RFC 3461 §6.1) to the
   original envelope sender.
3. Never bounce a bounce: when the original sender is null, a failure notice goes to the
   postmaster (a double bounce), marked ``X-Pigeon-Double-Bounce: yes``; delay and success
   notices about null-sender mail are dropped with a log line. When a marked notice (one this
   server queued itself, ``client.address == "local"``) fails in turn, it is only logged. With
   no postmaster address, the notice is logged and dropped.
4. Part 3 is the original's header section, unless the sender asked RET=FULL for a failure
   (RFC 3461 §4.3): then the whole message, when it is at most ``max_returned_body`` bytes and
   not BINARYMIME (which ``message/rfc822`` cannot carry over 8BITMIME). Delay and success
   notices, double bounces and postmaster copies return headers only.
5. The original is streamed from the queue's body file; only its header section (bounded by
   ``original.MAX_RETURNED_HEADERS``) is held in memory. The notice is written to the cleanup
   transaction in chunks.
6. ``bounce`` returns only once the notice is durable in the queue (cleanup's commit point);
   any failure to queue it propagates, so the queue manager keeps the recipients' state and
   tries again. The postmaster copy (``notify_postmaster``) is best effort: its failure is
   logged, never raised.
7. A notice goes through SMTPUTF8 (global types, RFC 6533) when the original did, or when an
   address it names is not ASCII.

What can go wrong: ``MailError`` from cleanup (disk full, directory failure), ``OSError`` while
streaming the original; both propagate from ``bounce``/``delay_warning``/``success``. An
unreadable body file does not stop a notice: it goes without part 3 and a log line says so.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, Protocol

from pigeon.bounce.compose import (
    DOUBLE_BOUNCE_FIELD,
    Audience,
    BoundaryClash,
    Kind,
    Notice,
    Returned,
    iter_dsn,
    new_boundary,
)
from pigeon.bounce.fields import Action, RecipientReport, report_for
from pigeon.bounce.original import OriginalHeaders, iter_crlf, read_headers
from pigeon.core.address import Address, format_path
from pigeon.core.clock import Clock
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import TemporaryError
from pigeon.proto.smtp.reply import C451_LOCAL_ERROR
from pigeon.queue.record import QueueRecord, RcptState

log = logging.getLogger(__name__)

# Postfix's bounce_size_limit is 50 kB; 1 MiB returns typical text mail with a small attachment
# whole, and keeps a large message from making a second trip.
DEFAULT_MAX_RETURNED_BODY = 1024 * 1024
# A random 128-bit boundary clashes with content by chance essentially never (compose rule 3);
# a few tries cover the impossible, then the notice is retried later by the queue manager.
MAX_BOUNDARY_TRIES = 4
_MESSAGE_ID = re.compile(r"^<[^<>\s]{1,900}>$")  # a Message-ID we may repeat in In-Reply-To
_DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})  # RFC 3461 §4.1: NOTIFY not given
_FLAG: dict[Kind, str] = {"failure": "FAILURE", "delay": "DELAY", "success": "SUCCESS"}


class NoticeTransaction(Protocol):
    """What the bounce stage needs of a cleanup ``Transaction``."""

    def add_rcpt(self, rcpt: Recipient) -> None: ...

    def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> QueueRecord: ...

    def abort(self) -> None: ...


class NoticeIntake(Protocol):
    """What the bounce stage needs of cleanup's ``Intake``."""

    def begin(self, envelope: Envelope) -> NoticeTransaction: ...


class BodySource(Protocol):
    """What the bounce stage needs of the ``QueueStore``."""

    def open_body(self, qid: QueueId) -> BinaryIO: ...


def wants_notice(notify: Iterable[str], kind: Kind) -> bool:
    """Rule 1 (RFC 3461 §4.1)."""
    flags = {n.upper() for n in notify}
    if "NEVER" in flags:
        return False
    return _FLAG[kind] in (flags or _DEFAULT_NOTIFY)


class Bouncer:
    """Satisfies ``pigeon.qmgr.manager.Bouncer``."""

    def __init__(
        self,
        intake: NoticeIntake,
        queue: BodySource,
        hostname: str,
        postmaster: Callable[[], Address | None],
        clock: Clock,
        notify_postmaster: bool = False,
        max_returned_body: int = DEFAULT_MAX_RETURNED_BODY,
        *,
        max_lifetime: float | None = None,
        on_queued: Callable[[QueueRecord], None] | None = None,
    ) -> None:
        self.intake = intake
        self.queue = queue
        self.hostname = hostname
        self.postmaster = postmaster
        self.clock = clock
        self.notify_postmaster = notify_postmaster
        self.max_returned_body = max_returned_body
        self.max_lifetime = max_lifetime  # for Will-Retry-Until; None leaves the field out
        # Called with each queued notice so that it is delivered now (the app sets it to
        # QueueManager.submit once the manager exists: the two refer to each other).
        self.on_queued = on_queued

    # -- the queue manager's calls -------------------------------------------------------

    async def bounce(self, record: QueueRecord, failed: Sequence[RcptState]) -> None:
        """Queue a failure notice for ``failed`` (durable when it returns)."""
        await self._notify(record, failed, "failure", "failed")

    async def delay_warning(self, record: QueueRecord, delayed: Sequence[RcptState]) -> None:
        """Queue a delay notice (Action: delayed) for ``delayed``."""
        await self._notify(record, delayed, "delay", "delayed")

    async def success(self, record: QueueRecord, relayed: Sequence[RcptState], action: str) -> None:
        """Queue a success notice (NOTIFY=SUCCESS). ``action`` is ``delivered``, or ``relayed``
        when the next hop does not speak DSN (RFC 3461 §5.2.2)."""
        if action == "delivered":
            await self._notify(record, relayed, "success", "delivered")
        elif action == "relayed":
            await self._notify(record, relayed, "success", "relayed")
        else:
            raise ValueError(f"success action must be 'delivered' or 'relayed', not {action!r}")

    # -- deciding who gets what ----------------------------------------------------------

    async def _notify(self, record: QueueRecord, rcpts: Sequence[RcptState], kind: Kind,
                      action: Action) -> None:
        wanted = [r for r in rcpts if wants_notice(r.notify, kind)]
        if not wanted:
            if rcpts:
                log.info("%s: no %s notice: NOTIFY excludes it for %s", record.id, kind,
                         ", ".join(format_path(r.original) for r in rcpts))
            return
        until = record.created + self.max_lifetime if self.max_lifetime is not None else None
        reports = tuple(report_for(r, action, until) for r in wanted)
        headers = self._read_headers(record)
        sender = record.envelope.sender
        if sender is None:  # rule 3: never bounce a bounce
            if kind != "failure":
                log.info("%s: no %s notice for a message with the null sender", record.id, kind)
                return
            if headers is not None and _is_our_postmaster_notice(record, headers):
                log.error("%s: a notice to the postmaster could not be delivered (%s); "
                          "it is not bounced again", record.id,
                          "; ".join(f"{format_path(r.final)}: {r.reply}" for r in reports))
                return
            postmaster = self.postmaster()
            if postmaster is None:
                log.error("%s: undeliverable message with the null sender and no postmaster "
                          "address configured; notice dropped", record.id)
                return
            await self._send(record, reports, kind, "postmaster", postmaster, headers)
            return
        await self._send(record, reports, kind, "sender", sender, headers)
        if self.notify_postmaster and kind == "failure":
            await self._copy_to_postmaster(record, reports, headers)

    async def _copy_to_postmaster(self, record: QueueRecord, reports: tuple[RecipientReport, ...],
                                  headers: OriginalHeaders | None) -> None:
        postmaster = self.postmaster()
        if postmaster is None:
            log.warning("%s: notify_postmaster is set but there is no postmaster address", record.id)
            return
        try:
            await self._send(record, reports, "failure", "copy", postmaster, headers)
        except Exception:  # rule 6: the copy is best effort
            log.exception("%s: queueing the postmaster's copy of the notice failed", record.id)

    # -- building and queueing -----------------------------------------------------------

    def _read_headers(self, record: QueueRecord) -> OriginalHeaders | None:
        try:
            with self.queue.open_body(record.id) as body:
                return read_headers(body)
        except OSError as exc:
            log.warning("%s: cannot read the original for its notice (%s); "
                        "the notice goes without it", record.id, exc)
            return None

    def _returned(self, record: QueueRecord, kind: Kind, audience: Audience,
                  headers: OriginalHeaders | None) -> tuple[Returned, bool]:
        """What part 3 holds, and whether a whole message was refused for size (rule 4)."""
        if headers is None:
            return "none", False
        env = record.envelope
        if kind != "failure" or audience != "sender" or env.ret != "FULL":
            return "headers", False
        if env.body == "BINARYMIME":
            log.info("%s: RET=FULL, but a BINARYMIME message is returned as headers", record.id)
            return "headers", False
        try:
            with self.queue.open_body(record.id) as body:
                size = os.fstat(body.fileno()).st_size
        except OSError as exc:
            log.warning("%s: cannot size the original (%s); returning headers", record.id, exc)
            return "headers", False
        if size > self.max_returned_body:
            return "headers", True
        return "full", False

    def _notice(self, record: QueueRecord, reports: tuple[RecipientReport, ...], kind: Kind,
                audience: Audience, to: Address, headers: OriginalHeaders | None) -> Notice:
        env = record.envelope
        returned, too_big = self._returned(record, kind, audience, headers)
        addresses = [to, *(r.final for r in reports), *(r.original for r in reports)]
        utf8 = env.smtputf8 or any(a.is_utf8 for a in addresses)  # rule 7
        raw = headers.raw if headers is not None else b""
        eight_bit = not raw.isascii() or (returned == "full" and env.body != "7BIT")
        return Notice(
            kind=kind,
            audience=audience,
            hostname=self.hostname,
            to=to,
            original_sender=env.sender,
            original_id=record.id,
            arrival=record.created,
            date=self.clock.now(),
            envid=env.envid,
            recipients=reports,
            returned=returned,
            too_big=too_big,
            utf8=utf8,
            eight_bit=eight_bit,
            boundary=new_boundary(record.id),
            message_id=f"<{secrets.token_hex(8)}.{record.id}@{self.hostname}>",
            in_reply_to=_message_id(headers, utf8),
            max_returned=self.max_returned_body,
        )

    @contextmanager
    def _part3(self, record: QueueRecord, notice: Notice,
               headers: OriginalHeaders | None) -> Iterator[Iterable[bytes]]:
        """Part 3's content: the held header section, or the body file streamed (rule 5)."""
        if notice.returned == "full":
            with self.queue.open_body(record.id) as body:
                yield iter_crlf(body)
        elif notice.returned == "headers" and headers is not None:
            yield (headers.raw,)
        else:
            yield ()

    async def _send(self, record: QueueRecord, reports: tuple[RecipientReport, ...], kind: Kind,
                    audience: Audience, to: Address, headers: OriginalHeaders | None) -> QueueRecord:
        for _ in range(MAX_BOUNDARY_TRIES):
            notice = self._notice(record, reports, kind, audience, to, headers)
            envelope = Envelope(
                sender=None,  # rule 2: RFC 5321 §4.5.5
                body="8BITMIME" if notice.eight_bit or notice.utf8 else "7BIT",
                smtputf8=notice.utf8,
                client=ClientInfo("local", self.hostname, "local"),
            )
            txn = self.intake.begin(envelope)
            try:
                txn.add_rcpt(Recipient(to))
                with self._part3(record, notice, headers) as original:
                    for chunk in iter_dsn(notice, original):
                        txn.write(chunk)
            except BoundaryClash:
                txn.abort()
                log.warning("%s: the notice boundary occurs in the message; trying another", record.id)
                continue
            except BaseException:
                txn.abort()
                raise
            queued = await txn.commit()  # rule 6: durable from here
            log.info("%s: %s notice %s queued as %s to=%s", record.id, kind, audience, queued.id,
                     format_path(to))
            self._hand_on(queued)
            return queued
        raise TemporaryError(C451_LOCAL_ERROR, f"{record.id}: no usable MIME boundary for the notice")

    def _hand_on(self, queued: QueueRecord) -> None:
        if self.on_queued is None:
            return
        try:
            self.on_queued(queued)
        except Exception:  # the notice is queued; the next queue scan delivers it
            log.exception("%s: handing the notice to the queue manager failed", queued.id)


def _is_our_postmaster_notice(record: QueueRecord, headers: OriginalHeaders) -> bool:
    """Rule 3: a notice this server queued for the postmaster (the mark alone could be forged
    by a remote sender, so the message must also have been queued locally)."""
    if record.envelope.sender is not None or record.envelope.client.address != "local":
        return False
    mark = headers.get(DOUBLE_BOUNCE_FIELD)
    return mark is not None and mark.strip().lower() == "yes"


def _message_id(headers: OriginalHeaders | None, utf8: bool) -> str | None:
    if headers is None:
        return None
    value = headers.get("Message-ID")
    if value is None:
        return None
    value = " ".join(value.split())
    if not _MESSAGE_ID.match(value) or not (utf8 or value.isascii()):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # undecodable 8-bit bytes in the original's field
        return None
    return value
