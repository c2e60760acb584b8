"""Cleanup: the only door into the queue. Turns a received transaction into a queued message.

``Intake.begin`` opens a ``Transaction``; the receiver (smtpd, sendmail, bounce) adds the
recipients, streams the message in, then commits. Cleanup prepends the ``Received:`` field,
watches the header section as it passes, expands recipients through the directory, and hands
the body and the recipient states to the queue.

Rules:
1. ``commit`` returns only once the message is durable (the queue's commit point); the SMTP
   server answers 250 only after it returns.
2. More than ``max_received`` ``Received:`` fields means a mail loop: the message is refused
   with ``554 5.4.6`` (RFC 5321 §6.3). A header section over ``max_header_bytes`` is refused
   with ``552 5.3.4``. Both are detected while the message streams; the refusal is raised by
   ``commit`` (the receiver must read the whole message before it may answer).
3. Every recipient is expanded through the ``RecipientExpander`` (aliases, forwards). Final
   addresses are deduplicated per message (by folded key), so a mailbox gets one copy; the
   first original recipient that led there is kept for DSNs. A recipient that expands to
   nothing (every branch looped) is kept as ``failed`` with ``550 5.4.6`` so it is bounced.
4. With ``add_missing_headers`` (submission, RFC 6409 §8), ``Date:`` and ``Message-ID:`` are
   added at the end of the header section when the message has none.
5. The body is streamed to the queue's file; nothing holds the whole message. A write error
   while streaming is remembered and raised by ``commit`` as ``452 4.3.1``.
6. A transaction is used once: after ``commit`` or ``abort``, it refuses further calls.
8. Between the end of the message and ``commit`` (``complete``), the checks of port 25
   (``pigeon.inbound``) may read the spooled message back (``spooled``), put header fields at
   the top (``prepend``: Authentication-Results, Received-SPF go above our Received:, RFC 8601
   §5, RFC 7208 §9.1), replace the whole header section (``replace_header``: a forged
   Authentication-Results removed, a milter's edits) or the whole message (``replace_message``:
   a milter's new body), and file the message into Junk (``quarantine``). The message is not
   held in memory for this: a large one is read back from and rewritten in its queue file.
7. Cleanup only says "commit": whether a message takes the queue's intake journal or its
   files is the queue's decision (``queue.store`` rule 8), not cleanup's.

What can go wrong (all from ``commit``): ``PermanentError`` (loop, header too big, no
recipients), ``TemporaryError``/``QueueWriteError`` (disk full, I/O error, directory failure).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol

from pigeon.cleanup.received import missing_headers, received_header
from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.core.envelope import JUNK, Envelope, Recipient
from pigeon.core.results import MailError, PermanentError, TemporaryError
from pigeon.proto.message.headers import HeaderScanner
from pigeon.proto.smtp.reply import (
    C451_LOCAL_ERROR,
    C554_LOOP,
    C554_NO_VALID_RECIPIENTS,
    Reply,
)
from pigeon.queue.record import Attempt, QueueRecord, RcptState
from pigeon.queue.api import QueueStore
from pigeon.queue.body import BodyWriter, QueueWriteError

log = logging.getLogger(__name__)

# RFC 5321 §6.3 asks for a loop limit and names 100 as a reasonable hop count (Postfix uses 50).
DEFAULT_MAX_RECEIVED = 100
# A generous cap on the header section: real headers are a few KiB; DKIM/ARC-heavy ones tens of
# KiB. Postfix's header_size_limit is 100 KiB per header; 1 MiB for the whole section.
DEFAULT_MAX_HEADER_BYTES = 1024 * 1024

C552_HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header section exceeds fixed maximum size")
C550_EXPANSION_LOOP = Reply(550, "5.4.6", "Alias expansion loop: no deliverable address left")


class RecipientExpander(Protocol):
    def expand(self, address: Address) -> list[Address]:
        """Alias/forward expansion (the directory); returns the final addresses."""
        ...


class Intake:
    def __init__(
        self,
        queue: QueueStore,
        expander: RecipientExpander,
        hostname: str,
        clock: Clock,
        max_received: int = DEFAULT_MAX_RECEIVED,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        add_missing_headers: bool = False,
    ) -> None:
        self.queue = queue
        self.expander = expander
        self.hostname = hostname
        self.clock = clock
        self.max_received = max_received
        self.max_header_bytes = max_header_bytes
        self.add_missing_headers = add_missing_headers

    def begin(self, envelope: Envelope, *, add_missing_headers: bool | None = None) -> Transaction:
        """Open a transaction. Recipients already in ``envelope`` are ignored: add them with
        ``add_rcpt``. ``add_missing_headers`` overrides the intake's default (rule 4)."""
        fix = self.add_missing_headers if add_missing_headers is None else add_missing_headers
        fresh = envelope.copy()
        fresh.recipients = []
        return Transaction(self, fresh, fix)


class Transaction:
    def __init__(self, intake: Intake, envelope: Envelope, add_missing_headers: bool) -> None:
        self._intake = intake
        self.envelope = envelope
        self.rcpts: list[RcptState] = []
        self._by_key: dict[str, RcptState] = {}
        self._fix_headers = add_missing_headers
        self._scanner = HeaderScanner(intake.max_header_bytes)
        self._body: BodyWriter | None = None
        self._error: MailError | None = None
        self._finished = False
        self._complete = False  # rule 8: the scanner has seen the end of the message
        self._received_len = 0  # our Received: field, the first octets of the body
        self._edited = 0  # octets the edits of rule 8 added to the header section

    @property
    def queue_id(self) -> str | None:
        """The queue id, once the message has started to stream (for log lines)."""
        return self._body.id if self._body is not None else None

    def _check_open(self) -> None:
        if self._finished:
            raise ValueError("transaction already committed or aborted")  # rule 6

    def add_rcpt(self, rcpt: Recipient) -> None:
        """Add an accepted recipient and expand it (rule 3). Raises TemporaryError (451) when
        the directory fails."""
        self._check_open()
        if self._body is not None:
            raise ValueError("recipients must be added before the message is written")
        try:
            finals = self._intake.expander.expand(rcpt.address)
        except Exception as exc:
            log.exception("cleanup: expanding <%s> failed", rcpt.address)
            raise TemporaryError(C451_LOCAL_ERROR, f"expanding {rcpt.address}: {exc}") from exc
        self.envelope.recipients.append(rcpt)
        if not finals:
            log.warning("cleanup: <%s> expands to no address; it will be bounced", rcpt.address)
            reply = str(C550_EXPANSION_LOOP)
            self.rcpts.append(
                RcptState(rcpt.address, rcpt.address, rcpt.notify, rcpt.orcpt, status="failed",
                          attempts=[Attempt(self._intake.clock.now(), "local", reply)], last_reply=reply)
            )
            return
        for final in finals:
            if final.key in self._by_key:
                continue  # one copy per mailbox; the first original is kept
            state = RcptState(final, rcpt.address, rcpt.notify, rcpt.orcpt)
            self._by_key[final.key] = state
            self.rcpts.append(state)

    def _start(self) -> BodyWriter | None:
        """Open the body and write our Received: field first (RFC 5321 §4.4)."""
        if self._body is None and self._error is None:
            try:
                self._body = self._intake.queue.new_body()
                head = received_header(
                    self.envelope.client,
                    self._intake.hostname,
                    self._body.id,
                    [r.address for r in self.envelope.recipients],
                    self._intake.clock.now(),
                    self.envelope.smtputf8,
                )
                self._body.write(head)
                self._received_len = len(head)
            except QueueWriteError as exc:
                self._fail(exc)
        return self._body if self._error is None else None

    def _fail(self, error: MailError) -> None:
        if self._error is None:
            self._error = error
        if self._body is not None:
            self._body.abort()

    def write(self, chunk: bytes) -> None:
        """Stream part of the message (in wire form, after dot-unstuffing). Never raises for
        message problems: they are raised by ``commit`` (rules 2 and 5)."""
        self._check_open()
        body = self._start()
        if body is None:
            return  # already refused: the rest is read and dropped
        if not self._scanner.in_headers:
            self._write(body, chunk)  # the body proper: straight to disk
            return
        scanned = self._scanner.feed(chunk)
        self._pass(body, scanned.header, scanned.tail)

    def _pass(self, body: BodyWriter, header: bytes, tail: bytes | None) -> None:
        if header:
            self._write(body, header)
        scanner = self._scanner
        if scanner.received > self._intake.max_received:  # RFC 5321 §6.3
            log.warning("cleanup: %s has %d Received: fields, loop suspected", body.id, scanner.received)
            self._fail(PermanentError(C554_LOOP))
        elif scanner.too_big:
            log.warning("cleanup: %s header section over %d bytes", body.id, self._intake.max_header_bytes)
            self._fail(PermanentError(C552_HEADER_TOO_BIG))
        if self._error is not None or tail is None:
            return
        added = self._end_headers(body)
        if added and not tail.startswith((b"\r\n", b"\n")):
            self._write(body, b"\r\n")  # the header section ended on a non-field line: separate it
        if tail:
            self._write(body, tail)

    def _end_headers(self, body: BodyWriter) -> bool:
        """Rule 4: add the missing Date:/Message-ID: at the end of the header section."""
        if not self._fix_headers:
            return False
        extra = missing_headers(self._scanner.seen, body.id, self._intake.hostname, self._intake.clock.now())
        if not extra:
            return False
        if not self._scanner.ends_with_newline:
            self._write(body, b"\r\n")
        self._write(body, extra)
        return True

    def _write(self, body: BodyWriter, data: bytes) -> None:
        if self._error is not None:
            return
        try:
            body.write(data)
        except QueueWriteError as exc:
            log.error("cleanup: writing %s failed: %s", body.id, exc)
            self._fail(exc)

    async def commit(self) -> QueueRecord:
        body = self._finish()
        try:
            record = await self._intake.queue.commit(body, self.envelope, self.rcpts)  # rule 7
        finally:
            self._finished = True
        return record

    def commit_sync(self) -> QueueRecord:
        body = self._finish()
        try:
            record = self._intake.queue.commit_sync(body, self.envelope, self.rcpts)
        finally:
            self._finished = True
        return record

    def abort(self) -> None:
        """Drop the transaction and its partial body. Safe to call more than once."""
        self._finished = True
        if self._body is not None:
            self._body.abort()

    # -- rule 8: between the end of the message and commit ------------------------------------

    def complete(self) -> bool:
        """The message has ended: flush the scanner. False when it is already refused (the
        refusal is raised by ``commit``), True when it may be checked and edited."""
        self._check_open()
        body = self._start()
        if body is not None and not self._complete:
            self._complete = True
            scanned = self._scanner.finish()
            self._pass(body, scanned.header, scanned.tail)
            if self._scanner.in_headers and self._error is None:
                self._end_headers(body)  # the message ended inside its header section
        return self._error is None and self._body is not None

    def _edit(self) -> BodyWriter:
        if not self._complete or self._error is not None or self._body is None:
            raise ValueError("the message is not complete, or already refused")
        return self._body

    @property
    def header_length(self) -> int:
        """Octets of the spooled header section (our Received: included, the empty line not)."""
        return self._received_len + self._scanner.header_bytes + self._edited

    @property
    def size(self) -> int:
        return self._body.size if self._body is not None else 0

    def has_field(self, name: str) -> bool:
        """Whether the header section has a field ``name`` (one the scanner watches)."""
        return name.lower() in self._scanner.seen

    def spooled(self, start: int = 0) -> Iterator[bytes]:
        """The spooled message (our Received: first) from ``start``, in pieces."""
        return self._edit().chunks(start)

    def prepend(self, fields: bytes) -> None:
        self._edit().splice(fields, 0)
        self._edited += len(fields)

    def replace_header(self, header: bytes) -> None:
        """Replace the header section (``header_length`` octets) with ``header``."""
        body = self._edit()
        old = self.header_length
        body.splice(header, old)
        self._edited += len(header) - old

    def replace_message(self, message: bytes) -> None:
        """Replace the whole spooled message (a milter's new body, with its header section)."""
        body = self._edit()
        old = body.size
        body.splice(message, old)
        end = message.find(b"\r\n\r\n")
        self._edited = (end + 2 if end >= 0 else len(message)) - self._received_len - self._scanner.header_bytes

    def quarantine(self, folder: str = JUNK) -> None:
        """Deliver into the recipients' ``folder`` (Junk) instead of INBOX (core.envelope rule 5)."""
        self.envelope.folder = folder

    def _finish(self) -> BodyWriter:
        """End of message: flush the scanner, check the limits; the body to commit."""
        self._check_open()
        self.complete()
        body = self._body if self._error is None else None
        if self._error is None and not self.envelope.recipients:
            self._fail(PermanentError(C554_NO_VALID_RECIPIENTS))
        if self._error is not None or body is None:
            self._finished = True
            if self._body is not None:
                self._body.abort()
            raise self._error or TemporaryError(C451_LOCAL_ERROR)
        return body
