"""One SMTP server session: the policy around the sans-IO protocol core.

Rules:
1. The protocol core (``pigeon.proto.smtp.server``) owns syntax, sequence and framing; this
   module owns policy: which recipients are accepted, limits, and the hand-off to cleanup.
2. Recipient policy on port 25 (the MX role): a local domain with a known user, alias or
   catch-all → ``250``; a local domain and an unknown user → ``550 5.1.1``; a relay domain
   (backup MX) → ``250``; anything else → ``554 5.7.1`` relay denied. ``postmaster`` is always
   accepted (RFC 5321 §4.5.1).
3. ``250`` after DATA or BDAT LAST only once cleanup's ``commit`` returned, i.e. once the message
   is durable (docs/queue.md). A failed queue write answers ``452 4.3.1``, never ``250``.
4. Errors are counted (syntax errors and rejected commands); past ``limits.max_errors`` the
   session ends with ``421 4.7.0``. Inactivity past ``limits.session_timeout`` ends it with
   ``421 4.4.2`` (RFC 5321 §4.5.3.2 asks at least 5 minutes of the server).
5. A message with a bare CR or LF in DATA is refused (``550 5.5.2``) unless the operator set
   ``smtp.bare_newline = "normalize"``: with strict ``<CRLF>.<CRLF>`` end detection in the core
   this closes SMTP smuggling (CVE-2023-51764 class).

What can go wrong: anything unexpected while committing becomes ``451 4.3.0`` with a log line;
the session goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pigeon import maillog
from pigeon.cleanup.intake import Intake, Transaction
from pigeon.config import Config
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import MailError
from pigeon.net.listener import Stream
from pigeon.queue.record import QueueRecord
from pigeon.proto.smtp import events as ev
from pigeon.proto.smtp.ehlo import ehlo_reply
from pigeon.proto.smtp.reply import (
    C214_HELP,
    C221_BYE,
    C250_OK,
    C250_RECIPIENT_OK,
    C250_RESET,
    C250_SENDER_OK,
    C252_CANNOT_VRFY,
    C354_START_INPUT,
    C421_SHUTTING_DOWN,
    C421_TIMEOUT,
    C421_TOO_MANY_ERRORS,
    C451_LOCAL_ERROR,
    C452_INSUFFICIENT_STORAGE,
    C452_TOO_MANY_RECIPIENTS,
    C502_NOT_IMPLEMENTED,
    C550_BARE_NEWLINE,
    C550_MAILBOX_UNAVAILABLE,
    C554_RELAY_DENIED,
    Reply,
)
from pigeon.proto.smtp.server import NEED_DATA, ServerConnection

log = logging.getLogger(__name__)

#: The ESMTP extensions the port 25 service offers (STARTTLS and AUTH come with submission).
OFFERED = frozenset({"SIZE", "8BITMIME", "CHUNKING", "SMTPUTF8", "DSN", "PIPELINING"})


class RecipientPolicy(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...

    def accepts(self, address: Address) -> bool: ...


@dataclass
class SmtpContext:
    """What every SMTP session shares; built once by the app."""

    config: Callable[[], Config]
    directory: RecipientPolicy
    intake: Intake
    on_queued: Callable[[QueueRecord], None]
    service: str = "smtp"
    software: str = "Pigeon"


class SmtpSession:
    def __init__(self, stream: Stream, ctx: SmtpContext) -> None:
        self.stream = stream
        self.ctx = ctx
        cfg = ctx.config()
        self.cfg = cfg
        self.conn = ServerConnection(
            max_message_size=cfg.limits.max_message_size,
            hard_line_limit=cfg.limits.max_line_length,
            offered=OFFERED,
            postmaster_domain=cfg.domains[0] if cfg.domains else cfg.hostname,
        )
        self.helo = ""
        self.esmtp = False
        self.txn: Transaction | None = None
        self.envelope: Envelope | None = None
        self.nrcpt = 0
        self.errors = 0
        self.commands = 0
        self.closing = False
        self._reading = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.closing = True
        if self._reading and self._task is not None:
            self._task.cancel()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        client = self.stream.peer_ip
        maillog.connect(client, self.ctx.service)
        text = self.cfg.smtp.greeting or f"ESMTP {self.ctx.software}"
        greeting = Reply(220, "", f"{self.cfg.hostname} {text}")
        self.conn.send(greeting)
        try:
            await self._loop()
        except asyncio.CancelledError:
            # Shutdown while idle: nothing unacknowledged was accepted. RFC 5321 §3.8.
            self.stream.write_nowait(self._reply_bytes(C421_SHUTTING_DOWN))
        except TimeoutError:
            self.stream.write_nowait(self._reply_bytes(C421_TIMEOUT))
        except (ConnectionError, OSError) as exc:
            log.debug("connection lost client=%s: %s", client, exc)
        finally:
            self._abort_txn()
            maillog.disconnect(client, self.ctx.service, self.commands, self.errors)

    def _reply_bytes(self, reply: Reply) -> bytes:
        return reply.with_text(f"{self.cfg.hostname} {reply.lines[0]}").to_bytes()

    async def _loop(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                await self.stream.write(conn.data_to_send())
                if self.closing:
                    await self.stream.write(self._reply_bytes(C421_SHUTTING_DOWN))
                    return
                self._reading = True
                try:
                    data = await self.stream.read()
                finally:
                    self._reading = False
                conn.receive_data(data)
                continue
            if isinstance(event, ev.ConnectionClosed):
                return
            if isinstance(event, ev.DataChunk):
                if self.txn is not None:
                    self.txn.write(event.data)
                continue
            self.commands += 1
            done = await self._handle(event)
            if done:
                await self.stream.write(conn.data_to_send())
                return
            if self.errors >= self.cfg.limits.max_errors:
                conn.send(C421_TOO_MANY_ERRORS)
                log.warning("too many errors client=%s errors=%d", self.stream.peer_ip, self.errors)
                await self.stream.write(conn.data_to_send())
                return

    # -- commands ----------------------------------------------------------------------------
    async def _handle(self, event: object) -> bool:
        conn = self.conn
        match event:
            case ev.Ehlo(domain=domain):
                self._reset()
                self.helo, self.esmtp = domain, True
                conn.send(ehlo_reply(self.cfg.hostname, domain, self._extensions()))
            case ev.Helo(domain=domain):
                self._reset()
                self.helo, self.esmtp = domain, False
                conn.send(Reply(250, "", f"{self.cfg.hostname}"))
            case ev.MailFrom():
                self._mail_from(event)
            case ev.RcptTo():
                self._rcpt_to(event)
            case ev.Data():
                self._ensure_txn()
                conn.send(C354_START_INPUT)
            case ev.Bdat():
                self._ensure_txn()  # chunk octets follow as DataChunk events; answered at BdatChunkEnd
            case ev.EndOfData(error=error, bare_newline=bare):
                if error is None and bare and self.cfg.smtp.bare_newline == "reject":
                    error = C550_BARE_NEWLINE
                await self._end_of_message(error)
            case ev.BdatChunkEnd(last=last, error=error):
                if error is not None or last:
                    await self._end_of_message(error)
                else:
                    conn.send(Reply(250, "2.0.0", "Chunk received"))
            case ev.Rset():
                self._reset()
                conn.send(C250_RESET)
            case ev.Noop():
                conn.send(C250_OK)
            case ev.Quit():
                conn.send(C221_BYE.with_text(f"{self.cfg.hostname} closing connection"))
                return True
            case ev.Vrfy():
                conn.send(C252_CANNOT_VRFY)
            case ev.Expn():
                conn.send(C502_NOT_IMPLEMENTED.with_text("EXPN not available"))
            case ev.Help():
                conn.send(C214_HELP.with_text("Pigeon SMTP: see RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT"))
            case ev.StartTls():
                self.errors += 1
                conn.send(C502_NOT_IMPLEMENTED.with_text("STARTTLS not available"))
            case ev.Auth():
                self.errors += 1
                conn.send(C502_NOT_IMPLEMENTED.with_text("AUTH not available on this service"))
            case ev.AuthResponse():
                conn.send(C502_NOT_IMPLEMENTED)
            case ev.CommandRejected(reply=reply):
                self.errors += 1
                maillog.rejected(self.stream.peer_ip, "COMMAND", reply, helo=self.helo or None)
            case _:
                log.error("unhandled SMTP event %r", event)
                conn.send(C451_LOCAL_ERROR)
        return False

    def _extensions(self) -> list[str]:
        size = self.cfg.limits.max_message_size
        return [
            f"SIZE {size}" if size else "SIZE",
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ]

    def _protocol(self) -> str:
        # RFC 3848 "with" keywords; S and A are added by the TLS and AUTH layers.
        return "ESMTP" if self.esmtp else "SMTP"

    def _mail_from(self, event: ev.MailFrom) -> None:
        p = event.params
        client = ClientInfo(self.stream.peer_ip, self.helo, self._protocol(), None, self.stream.tls_info)
        self.envelope = Envelope(
            sender=event.sender,
            body=p.body or "7BIT",
            smtputf8=p.smtputf8,
            ret=p.ret,
            envid=p.envid,
            client=client,
        )
        self.txn = None
        self.nrcpt = 0
        self.conn.send(C250_SENDER_OK)

    def _rcpt_to(self, event: ev.RcptTo) -> None:
        rcpt = event.recipient
        if self.nrcpt >= self.cfg.limits.max_recipients:
            # RFC 5321 §4.5.3.1.8: 452 tells the client to send the rest in another transaction.
            self.conn.send(C452_TOO_MANY_RECIPIENTS)
            return
        reply = self._check_recipient(rcpt)
        if reply is not None:
            self.errors += 1
            maillog.rejected(self.stream.peer_ip, "RCPT", reply,
                             sender=self.envelope.sender if self.envelope else None, rcpt=rcpt,
                             helo=self.helo or None)
            self.conn.send(reply)
            return
        assert self.envelope is not None  # the core only emits RcptTo inside a transaction
        self.envelope.recipients.append(Recipient(rcpt, event.notify, event.orcpt))
        self.nrcpt += 1
        self.conn.send(C250_RECIPIENT_OK)

    def _check_recipient(self, rcpt: Address) -> Reply | None:
        directory = self.ctx.directory
        if rcpt.local.lower() == "postmaster" and directory.is_local_domain(rcpt.domain):
            return None  # RFC 5321 §4.5.1
        if directory.is_local_domain(rcpt.domain):
            if directory.accepts(rcpt):
                return None
            return C550_MAILBOX_UNAVAILABLE.with_text(f"<{rcpt}>: Recipient address rejected: User unknown")
        if rcpt.domain in self.cfg.relay_domains:
            return None
        return C554_RELAY_DENIED.with_text(f"<{rcpt}>: Relay access denied")

    def _ensure_txn(self) -> Transaction | None:
        if self.txn is None and self.envelope is not None:
            self.txn = self.ctx.intake.begin(self.envelope)
            for r in self.envelope.recipients:
                self.txn.add_rcpt(r)
        return self.txn

    async def _end_of_message(self, error: Reply | None) -> None:
        conn = self.conn
        txn = self.txn
        envelope = self.envelope
        self.txn = None
        self.envelope = None
        self.nrcpt = 0
        if error is not None:
            if txn is not None:
                txn.abort()
            self.errors += 1
            maillog.rejected(self.stream.peer_ip, "DATA", error,
                             sender=envelope.sender if envelope else None, helo=self.helo or None)
            conn.send(error)
            return
        if txn is None:
            conn.send(C451_LOCAL_ERROR)
            return
        try:
            record = await txn.commit()
        except MailError as exc:
            maillog.rejected(self.stream.peer_ip, "DATA", exc.reply,
                             sender=envelope.sender if envelope else None, helo=self.helo or None)
            conn.send(exc.reply)
            return
        except OSError as exc:
            log.error("queue write failed client=%s: %s", self.stream.peer_ip, exc)
            conn.send(C452_INSUFFICIENT_STORAGE)
            return
        except Exception:
            log.exception("commit failed client=%s", self.stream.peer_ip)
            conn.send(C451_LOCAL_ERROR)
            return
        maillog.received(record.id, self.stream.peer_ip, record.envelope.sender,
                         len(record.envelope.recipients), record.size, record.envelope.client.protocol)
        conn.send(Reply(250, "2.0.0", f"Ok: queued as {record.id}"))
        self.ctx.on_queued(record)

    def _reset(self) -> None:
        self._abort_txn()
        self.envelope = None
        self.nrcpt = 0

    def _abort_txn(self) -> None:
        if self.txn is not None:
            try:
                self.txn.abort()
            except OSError as exc:
                log.warning("abort failed: %s", exc)
            self.txn = None
