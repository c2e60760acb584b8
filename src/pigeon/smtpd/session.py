"""One SMTP server session: the policy around the sans-IO protocol core.

Rules:
1. The protocol core (``pigeon.proto.smtp.server``) owns syntax, sequence and framing; the
   session driver (``net.driver``) owns reading, writing, timeouts and the TLS upgrade; this
   module owns policy: which recipients are accepted, limits, and the hand-off to cleanup.
2. Recipient policy on port 25 (the MX role): a local domain with a known user, alias or
   catch-all → ``250``; a local domain and an unknown user → ``550 5.1.1``; a relay domain
   (backup MX) → ``250``; anything else → ``554 5.7.1`` relay denied. ``postmaster`` is always
   accepted (RFC 5321 §4.5.1).
3. ``250`` after DATA or BDAT LAST only once cleanup's ``commit`` returned, i.e. once the message
   is durable (docs/queue.md). A failed queue write answers ``452 4.3.1``, never ``250``.
4. Errors are counted (syntax errors and rejected commands); past ``limits.max_errors`` the
   session ends with ``421 4.7.0`` and a log line (no second 421 when the core already closed
   on a fatal line). Every reply the core holds is written before the session ends, whatever
   ends it: the ``250`` of a committed message pipelined before a fatal line is never lost
   (the client would send the message again). Inactivity past ``limits.session_timeout``
   ends it with ``421 4.4.2`` (RFC 5321 §4.5.3.2 asks at least 5 minutes of the server), and
   so does a line that does not arrive whole within ``limits.line_timeout``; a server
   shutdown with ``421 4.3.2`` once the commands already received are answered.
6. STARTTLS (RFC 3207) where a certificate is configured: ``220``, then the handshake; the core
   and the stream drop anything pipelined after the command, and the session starts again
   from EHLO. AUTH (RFC 4954, ``pigeon.auth.sasl``) where the service offers it; mechanisms
   are advertised only on a protected channel; a 421 from the throttle closes the session.
   Authenticated sessions follow ``smtpd.policy`` (submission rules, relay for the user).
5. A message with a bare CR or LF in DATA or BDAT is refused (``550 5.5.2``) unless the
   operator set ``smtp.bare_newline = "normalize"``: with strict ``<CRLF>.<CRLF>`` end
   detection in the core this closes SMTP smuggling (CVE-2023-51764 class), and no message
   taken in by BDAT carries a bare LF that a next hop reached by DATA could take for an end.
8. An SRS address (``SRS0=``/``SRS1=``) in a local domain is accepted only when it verifies
   (``mailauth.srs``: hash, age, form); a forged, expired or malformed one is refused with
   ``550 5.7.1`` and a log line saying why (issue 17). Cleanup expands it to the original sender.

7. Port 25 (``SmtpContext.verdicts`` set, ``pigeon.inbound.verdict``): the DNS blocklists are
   asked when the client connects, in parallel with the greeting, and a listed client gets
   ``554 5.7.1`` to EHLO/HELO (the core then refuses MAIL: no transaction can start); SPF
   starts at MAIL FROM; at the end of DATA/BDAT the verdict may refuse the message (DMARC
   reject, our own domain spoofed, a milter), discard it or file it into Junk, and writes
   Authentication-Results before the commit. The log line gains ``spf= dkim= dmarc=``.

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
from pigeon.auth.sasl import (
    Authenticator,
    Challenge,
    Failure,
    LoggedIn,
    SaslExchange,
    Step,
    plaintext_allowed,
)
from pigeon.cleanup.intake import Intake, Transaction
from pigeon.config import Config
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import MailError
from pigeon.mailauth.srs import Srs, SrsError, is_srs
from pigeon.inbound.seams import SpfOutcome
from pigeon.inbound.verdict import C250_DISCARDED, Client, Outcome, Verdicts
from pigeon.net.driver import Ending, SessionDriver
from pigeon.net.listener import READ_SIZE, Stream
from pigeon.net.tls import TlsManager
from pigeon.smtpd.auth import SUCCESS, challenge_reply, failure_reply
from pigeon.smtpd.policy import SenderPolicy
from pigeon.submission.sender import FromCollector
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
from pigeon.proto.smtp.events import NeedData
from pigeon.proto.smtp.server import ESMTP_LINE_ALLOWANCE, NEED_DATA, ServerConnection, ServerState

log = logging.getLogger(__name__)

C530_REQUIRETLS_NEEDS_TLS = Reply(530, "5.7.10", "REQUIRETLS needs a TLS session")  # RFC 5248 X.7.10

#: The ESMTP extensions every SMTP service offers; STARTTLS and AUTH are added per service.
OFFERED = frozenset({"SIZE", "8BITMIME", "CHUNKING", "SMTPUTF8", "DSN", "PIPELINING"})
C220_READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")  # RFC 3207 §4
# RFC 3463 X.7.1: delivery not authorized (postsrsd's answer to a bad SRS address).
C550_SRS_INVALID = Reply(550, "5.7.1", "Invalid SRS address")
C454_TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")  # RFC 3207 §4


def _max_buffered(conn: ServerConnection) -> int:
    """``net.driver`` rule 2: the core holds less than its longest line when it asks for more
    (an over-long line is dropped as it arrives), plus one read of slack."""
    longest = max(conn.hard_line_limit + 1, conn.auth_line_limit, conn.max_command_line + ESMTP_LINE_ALLOWANCE)
    return longest + READ_SIZE


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
    tls: TlsManager | None = None  # STARTTLS offered when set and the channel is not TLS yet
    authenticator: Authenticator | None = None  # AUTH offered when set
    senders: SenderPolicy | None = None  # the rules for authenticated users (smtpd.policy)
    submission: bool = False  # submission service: MAIL needs AUTH; fix-ups of submitted mail
    srs: Srs | None = None  # SRS addresses in local domains are checked at RCPT (rule 8)
    verdicts: Verdicts | None = None  # port 25's checks (rule 7); None elsewhere


class SmtpSession:
    """One connection: the handler the session driver calls (``net.driver``), rules 1-6."""

    def __init__(self, stream: Stream, ctx: SmtpContext) -> None:
        self.stream = stream
        self.ctx = ctx
        cfg = ctx.config()
        self.cfg = cfg
        offered = set(OFFERED)
        if ctx.tls is not None and not stream.tls_active:
            offered.add("STARTTLS")
        if ctx.authenticator is not None:
            offered.add("AUTH")
        if ctx.submission and (ctx.tls is not None or stream.tls_active):
            offered.add("REQUIRETLS")  # RFC 8689 §3; shown in EHLO once TLS is on (_extensions)
        self.conn = ServerConnection(
            max_message_size=cfg.limits.max_message_size,
            hard_line_limit=cfg.limits.max_line_length,
            offered=frozenset(offered),
            postmaster_domain=cfg.domains[0] if cfg.domains else cfg.hostname,
        )
        if stream.tls_active:
            self.conn.tls_active = True  # implicit TLS (port 465)
        # Replies go out together when the input runs dry (no flush_at): a pipelined
        # transaction is answered in one write (RFC 2920 §3.1).
        self.driver = SessionDriver(stream, self.conn, need=NEED_DATA, output=self.conn.data_to_send,
                                    max_buffered=_max_buffered(self.conn), service=ctx.service)
        self.user: str | None = None  # the authenticated account (folded address)
        self.sasl: SaslExchange | None = None
        self.from_check: FromCollector | None = None
        self.helo = ""
        self.esmtp = False
        self.txn: Transaction | None = None
        self.envelope: Envelope | None = None
        self.nrcpt = 0
        self.errors = 0
        self.commands = 0
        self.blocklist: asyncio.Future[Reply | None] | None = None  # rule 7
        self.spf_task: asyncio.Task[SpfOutcome] | None = None

    # -- lifecycle (net.listener.Session) ------------------------------------------------------
    async def run(self) -> None:
        await self.driver.run(self)

    def shutdown(self) -> None:
        self.driver.shutdown()

    # -- the driver's handler (net.driver.Handler) ------------------------------------------------
    async def start(self) -> None:
        maillog.connect(self.stream.peer_ip, self.ctx.service)
        verdicts = self.ctx.verdicts
        if verdicts is not None and self.cfg.inbound.dnsbl:
            self.blocklist = asyncio.ensure_future(verdicts.dnsbl(self.stream.peer_ip))
        text = self.cfg.smtp.greeting or f"ESMTP {self.ctx.software}"
        self.conn.send(Reply(220, "", f"{self.cfg.hostname} {text}"))

    async def handle(self, event: ev.ServerEvent | NeedData) -> bool:
        """One event of the core; True ends the session (the driver writes what is due)."""
        if isinstance(event, ev.DataChunk):  # the hot path: message octets into the queue file
            if self.txn is not None:
                self.txn.write(event.data)
                if self.from_check is not None:
                    self.from_check.feed(event.data)
            return False
        if isinstance(event, ev.ConnectionClosed):
            return True  # rule 4: the driver writes the replies already due
        self.commands += 1
        conn = self.conn
        match event:
            case ev.Ehlo(domain=domain):
                self._reset()
                if not await self._listed(domain):
                    self.helo, self.esmtp = domain, True
                    conn.send(ehlo_reply(self.cfg.hostname, domain, self._extensions()))
            case ev.Helo(domain=domain):
                self._reset()
                if not await self._listed(domain):
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
                await self._end_of_message(error, crlf=not bare)
            case ev.BdatChunkEnd(last=last, error=error, bare_newline=bare):
                if error is None and bare and self.cfg.smtp.bare_newline == "reject":
                    error = C550_BARE_NEWLINE  # rule 5, as for DATA
                if error is not None or last:
                    await self._end_of_message(error, crlf=not bare)
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
                await self._starttls()
            case ev.Auth(mechanism=mechanism, initial=initial):
                if await self._auth_begin(mechanism, initial):
                    return True
            case ev.AuthResponse(line=line):
                if self.sasl is None:
                    conn.send(C451_LOCAL_ERROR)
                elif await self._auth_step(self.sasl.respond(line)):
                    return True
            case ev.CommandRejected(reply=reply):
                self.errors += 1
                maillog.rejected(self.stream.peer_ip, "COMMAND", reply, helo=self.helo or None, service=self.ctx.service)
            case _:
                log.error("unhandled SMTP event %r", event)
                conn.send(C451_LOCAL_ERROR)
        if self.errors >= self.cfg.limits.max_errors:  # rule 4
            if conn.state is not ServerState.CLOSED:  # a fatal line already sent its 421
                conn.send(C421_TOO_MANY_ERRORS)
            log.warning("too many errors client=%s errors=%d", self.stream.peer_ip, self.errors)
            return True
        return False

    def farewell(self, ending: Ending) -> bytes:
        if ending is Ending.TIMEOUT:
            return self._reply_bytes(C421_TIMEOUT)
        return self._reply_bytes(C421_SHUTTING_DOWN)  # nothing unacknowledged was accepted; RFC 5321 §3.8

    async def finish(self) -> None:
        self._abort_txn()
        if self.blocklist is not None:
            self.blocklist.cancel()
        maillog.disconnect(self.stream.peer_ip, self.ctx.service, self.commands, self.errors)

    def _reply_bytes(self, reply: Reply) -> bytes:
        return reply.with_text(f"{self.cfg.hostname} {reply.lines[0]}").to_bytes()

    async def _listed(self, helo: str) -> bool:
        """Rule 7: a client in a DNS blocklist is answered 554 at EHLO/HELO."""
        if self.blocklist is None:
            return False
        try:
            reply = await self.blocklist
        except Exception:
            log.exception("dnsbl lookup failed client=%s", self.stream.peer_ip)
            reply = None
        if reply is None:
            return False
        self.errors += 1
        maillog.rejected(self.stream.peer_ip, "CONNECT", reply, helo=helo or None)
        self.conn.send(reply)
        return True

    # -- STARTTLS and AUTH ----------------------------------------------------------------------
    async def _starttls(self) -> None:
        """RFC 3207: 220, handshake, then a fresh session (the core forgot EHLO and any AUTH)."""
        tls = self.ctx.tls
        if tls is None:  # not offered: the core answered already; kept for type narrowing
            self.conn.send(C454_TLS_UNAVAILABLE)
            return
        self.conn.send(C220_READY_FOR_TLS)
        await self.driver.start_tls(tls.context())  # TlsHandshakeFailed ends the session quietly
        self._reset()
        self.helo, self.esmtp, self.user, self.sasl = "", False, None, None
        self.conn.offered = self.conn.offered - {"STARTTLS"}

    def _secure(self) -> bool:
        return plaintext_allowed(self.stream.tls_active, self.stream.peer_ip,
                                 self.cfg.auth.allow_plaintext_on_loopback)

    async def _auth_begin(self, mechanism: str, initial: str | None) -> bool:
        authenticator = self.ctx.authenticator
        if authenticator is None:
            self.conn.send(C502_NOT_IMPLEMENTED)
            return False
        self.sasl, step = authenticator.begin(mechanism, initial, secure=self._secure(),
                                              ip=self.stream.peer_ip)
        return await self._auth_step(step)

    async def _auth_step(self, step: Step) -> bool:
        """Send a challenge, verify credentials, or answer a failure; True closes the session."""
        authenticator = self.ctx.authenticator
        if isinstance(step, Challenge):
            self.conn.send(challenge_reply(step))
            return False
        self.sasl = None
        if isinstance(step, Failure):
            self.errors += 1
            self.conn.send(failure_reply(step.kind))
            return step.close
        if authenticator is None:  # pragma: no cover - a step only exists with an authenticator
            self.conn.send(C451_LOCAL_ERROR)
            return False
        outcome = await authenticator.verify(step, self.stream.peer_ip)
        if isinstance(outcome, LoggedIn):
            self.conn.send(SUCCESS)
            self.user = outcome.user
            return False
        self.errors += 1
        self.conn.send(failure_reply(outcome.kind))
        return outcome.close

    def _extensions(self) -> list[str]:
        size = self.cfg.limits.max_message_size
        out = [
            f"SIZE {size}" if size else "SIZE",
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ]
        if "STARTTLS" in self.conn.offered and not self.stream.tls_active:
            out.append("STARTTLS")
        if "REQUIRETLS" in self.conn.offered and self.stream.tls_active:
            out.append("REQUIRETLS")  # RFC 8689 §3: offered only over TLS
        if self.ctx.authenticator is not None:
            mechanisms = self.ctx.authenticator.mechanisms(self._secure())
            if mechanisms:  # RFC 4954 §4: plaintext mechanisms only on a protected channel
                out.append("AUTH " + " ".join(mechanisms))
        return out

    def _protocol(self) -> str:
        # RFC 3848 "with" keywords: ESMTP, then S for TLS and A for an authenticated client.
        if not self.esmtp:
            return "SMTP"
        return "ESMTP" + ("S" if self.stream.tls_active else "") + ("A" if self.user else "")

    def _mail_from(self, event: ev.MailFrom) -> None:
        p = event.params
        senders = self.ctx.senders
        if senders is not None:
            refusal = senders.mail_from(self.user, event.sender, required=self.ctx.submission)
            if refusal is not None:
                self.errors += 1
                maillog.rejected(self.stream.peer_ip, "MAIL", refusal, sender=event.sender,
                                 helo=self.helo or None, service=self.ctx.service)
                self.conn.send(refusal)
                return
        if p.requiretls and not self.stream.tls_active:  # RFC 8689 §3: only within TLS
            self.errors += 1
            self.conn.send(C530_REQUIRETLS_NEEDS_TLS)
            return
        client = ClientInfo(self.stream.peer_ip, self.helo, self._protocol(), self.user, self.stream.tls_info)
        self.envelope = Envelope(
            sender=event.sender,
            body=p.body or "7BIT",
            smtputf8=p.smtputf8,
            ret=p.ret,
            envid=p.envid,
            client=client,
            requiretls=p.requiretls,
        )
        self.txn = None
        self.nrcpt = 0
        if self.ctx.verdicts is not None and self.user is None:  # rule 7: SPF while RCPT and DATA come
            self._cancel_spf()
            self.spf_task = self.ctx.verdicts.spf(self._client(), self._mail_from_text())
        self.conn.send(C250_SENDER_OK)

    def _rcpt_to(self, event: ev.RcptTo) -> None:
        rcpt = event.recipient
        if self.nrcpt >= self.cfg.limits.max_recipients:
            # RFC 5321 §4.5.3.1.8: 452 tells the client to send the rest in another transaction.
            self.conn.send(C452_TOO_MANY_RECIPIENTS)
            return
        reply = self._check_recipient(rcpt)
        if reply is None and self.ctx.senders is not None:
            reply = self.ctx.senders.rcpt(self.user, self.nrcpt)
        if reply is not None:
            self.errors += 1
            maillog.rejected(self.stream.peer_ip, "RCPT", reply,
                             sender=self.envelope.sender if self.envelope else None, rcpt=rcpt,
                             helo=self.helo or None, service=self.ctx.service)
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
            if self.ctx.srs is not None and is_srs(rcpt.local):  # rule 8
                try:
                    self.ctx.srs.reverse(rcpt, self.ctx.intake.clock.now())
                except SrsError as exc:
                    log.warning("srs: RCPT <%s> from %s refused: %s", rcpt, self.stream.peer_ip, exc)
                    return C550_SRS_INVALID.with_text(f"<{rcpt}>: invalid SRS address ({exc})")
                return None
            if directory.accepts(rcpt):
                return None
            return C550_MAILBOX_UNAVAILABLE.with_text(f"<{rcpt}>: Recipient address rejected: User unknown")
        if rcpt.domain in self.cfg.relay_domains or self.user is not None:
            return None  # a relay domain (backup MX), or an authenticated user sending out
        return C554_RELAY_DENIED.with_text(f"<{rcpt}>: Relay access denied")

    def _ensure_txn(self) -> Transaction | None:
        if self.txn is None and self.envelope is not None:
            # RFC 6409 §8: submitted mail gets Message-ID and Date when missing.
            self.txn = self.ctx.intake.begin(self.envelope, add_missing_headers=self.user is not None)
            self.from_check = FromCollector() if self.user is not None else None
            for r in self.envelope.recipients:
                self.txn.add_rcpt(r)
        return self.txn

    async def _end_of_message(self, error: Reply | None, *, crlf: bool = False) -> None:
        """``crlf``: the core saw no bare CR or LF in the data (rule 5), so every line of the
        spooled message ends in CRLF (what the DKIM check may then skip verifying)."""
        conn = self.conn
        txn = self.txn
        envelope = self.envelope
        from_check, self.from_check = self.from_check, None
        self.txn = None
        self.envelope = None
        self.nrcpt = 0
        if error is None and self.ctx.senders is not None:
            try:
                error = self.ctx.senders.check_headers(self.user, from_check)
            except Exception:
                log.exception("sender check failed client=%s", self.stream.peer_ip)
                error = C451_LOCAL_ERROR
        if error is not None:
            if txn is not None:
                txn.abort()
            self.errors += 1
            maillog.rejected(self.stream.peer_ip, "DATA", error,
                             sender=envelope.sender if envelope else None, helo=self.helo or None, service=self.ctx.service)
            conn.send(error)
            return
        if txn is None:
            conn.send(C451_LOCAL_ERROR)
            return
        outcome = await self._verdict(txn, crlf)
        if outcome.refuse is not None or outcome.discard:
            txn.abort()
            reply = outcome.refuse or C250_DISCARDED
            if outcome.refuse is not None:
                self.errors += 1
            maillog.rejected(self.stream.peer_ip, "DATA", reply,
                             sender=envelope.sender if envelope else None, helo=self.helo or None,
                             reason=outcome.reason or None, checks=outcome.fields)
            conn.send(reply)
            return
        try:
            record = await txn.commit()
        except MailError as exc:
            maillog.rejected(self.stream.peer_ip, "DATA", exc.reply,
                             sender=envelope.sender if envelope else None, helo=self.helo or None, service=self.ctx.service)
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
                         len(record.envelope.recipients), record.size, record.envelope.client.protocol,
                         service=self.ctx.service, folder=record.envelope.folder,
                         reason=outcome.reason or None, checks=outcome.fields)
        conn.send(Reply(250, "2.0.0", f"Ok: queued as {record.id}"))
        if self.ctx.senders is not None:
            self.ctx.senders.queued(self.user)
        self.ctx.on_queued(record)

    def _client(self) -> Client:
        return Client(self.stream.peer_ip, self.stream.peer_port, self.helo)

    def _mail_from_text(self) -> str:
        sender = self.envelope.sender if self.envelope is not None else None
        return str(sender) if sender is not None else ""

    def _cancel_spf(self) -> None:
        if self.spf_task is not None:
            self.spf_task.cancel()
            self.spf_task = None

    async def _verdict(self, txn: Transaction, crlf: bool) -> Outcome:
        """Rule 7 at the end of the message; a failure of the checks themselves is 451."""
        verdicts = self.ctx.verdicts
        spf_task, self.spf_task = self.spf_task, None
        if verdicts is None or self.user is not None:
            if spf_task is not None:
                spf_task.cancel()
            return Outcome()
        mail_from = str(txn.envelope.sender) if txn.envelope.sender is not None else ""
        try:
            return await verdicts.end_of_message(txn, self._client(), mail_from, spf_task, crlf=crlf)
        except MailError as exc:
            return Outcome(refuse=exc.reply, reason=str(exc))
        except OSError as exc:
            log.error("queue write failed during checks client=%s: %s", self.stream.peer_ip, exc)
            return Outcome(refuse=C452_INSUFFICIENT_STORAGE, reason="spool rewrite failed")
        except Exception:
            log.exception("inbound checks failed client=%s", self.stream.peer_ip)
            return Outcome(refuse=C451_LOCAL_ERROR, reason="inbound checks failed")

    def _reset(self) -> None:
        self._abort_txn()
        self._cancel_spf()
        self.from_check = None
        self.envelope = None
        self.nrcpt = 0

    def _abort_txn(self) -> None:
        if self.txn is not None:
            try:
                self.txn.abort()
            except OSError as exc:
                log.warning("abort failed: %s", exc)
            self.txn = None
