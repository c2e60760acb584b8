"""One POP3 session: the policy around the sans-IO core.

Rules:
1. The core (``proto.pop3.server``) owns syntax, states and framing; the session driver
   (``net.driver``) owns reading, writing, timeouts and the TLS upgrade; this module owns
   login, the maildrop and the store calls. Store calls are blocking and run in a worker thread.
2. Login (``login.py``): USER/PASS or AUTH through the shared ``Authenticator``; then the
   maildrop lock (``-ERR [IN-USE]``, RFC 2449 §8.1.1) and the INBOX snapshot (``maildrop.py``).
   A store failure at login is ``-ERR [SYS/TEMP]`` (RFC 3206 §5) and the session stays in
   AUTHORIZATION.
3. Deletions happen only at QUIT in the UPDATE state (RFC 1939 §6), through
   ``Mailbox.remove``; retrieved messages that were kept are marked ``\\Seen`` then. A dropped
   connection, a timeout or a shutdown removes nothing. A failed removal answers
   ``-ERR [SYS/TEMP] Some deleted messages not removed`` (RFC 1939 §6).
4. The inactivity autologout (RFC 1939 §3) is ``settings.idle_timeout`` (at least 10 minutes;
   the session sets the stream's timeout to it): when it expires the connection is closed
   without a response and without entering UPDATE.
5. Bad commands (those the core rejects) are counted; at ``settings.max_bad_commands`` the
   session answers ``-ERR Too many bad commands`` and closes.
6. STLS (RFC 2595 §4) is offered while ``tls`` is configured and the channel is in clear; after
   ``+OK`` the core and the stream forget everything buffered and the handshake runs
   (``net.driver`` rule 7). On pop3s the listener runs the handshake before the session
   exists (``net.listener`` rule 3); a stream that reaches the session still in clear is
   handshaken here first. A failed handshake ends the session.
7. ``shutdown`` (server stopping): a session waiting for a command answers
   ``-ERR [SYS/TEMP] Server shutting down`` and closes, without UPDATE; one busy with a command
   finishes it first.
8. The maildrop lock is released and the mailbox closed however the session ends; after QUIT,
   before the ``+OK``, so that a client logging in again at once finds the maildrop free.
9. Read-ahead: after a RETR of message n, message n+1 (when it exists, is not deleted and is
   at most ``READ_AHEAD_MAX`` octets) is read in a worker thread while the answer is sent, since
   clients that download fetch one message after the other; the next RETR takes it instead of
   reading again. At most one message is read ahead; a read-ahead nobody asks for is dropped.

What can go wrong: unexpected store errors are logged and answered ``-ERR [SYS/TEMP]``; the
session goes on. Connection errors end the session quietly (logged at debug level).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pigeon import maillog
from pigeon.auth.sasl import plaintext_allowed
from pigeon.core.address import Address, parse_address
from pigeon.net.driver import Ending, SessionDriver, TlsHandshakeFailed
from pigeon.net.listener import READ_SIZE, Stream
from pigeon.pop3d.login import Pop3Login
from pigeon.pop3d.maildrop import Entry, Maildrop
from pigeon.pop3d.seams import Pop3Mailbox
from pigeon.proto.pop3 import events as ev
from pigeon.proto.pop3.events import NEED_DATA, NeedData
from pigeon.proto.pop3.message import top
from pigeon.proto.pop3.responses import (
    ERR_IN_USE,
    ERR_NOT_REMOVED,
    ERR_SHUTTING_DOWN,
    ERR_SYS_TEMP,
    ERR_TLS_UNAVAILABLE,
    ERR_TOO_MANY_ERRORS,
    OK,
    AnyResponse,
    MultiLine,
    Response,
    capabilities,
)
from pigeon.proto.pop3.server import Pop3State, ServerConnection

if TYPE_CHECKING:
    from pigeon.pop3d.factory import Pop3SessionFactory

log = logging.getLogger(__name__)

SEEN = frozenset({"\\Seen"})
ERR_GONE = Response(False, "Message was removed by another session")
# MailboxError codes for a message expunged by another session since the snapshot (seams rule 4).
GONE_CODES = frozenset({"EXPUNGEISSUED", "NONEXISTENT"})
READ_AHEAD_MAX = 1024 * 1024  # rule 9: octets; a larger next message is read when asked for


def _consume(task: asyncio.Future[bytes]) -> None:
    """A read-ahead nobody awaited: its failure is not an error (the RETR reads again)."""
    if not task.cancelled():
        task.exception()


class Pop3Session:
    """One connection: the handler the session driver calls (``net.driver``)."""

    def __init__(self, stream: Stream, ctx: Pop3SessionFactory) -> None:
        self.stream = stream
        self.ctx = ctx
        self.settings = ctx.settings
        self.conn = ServerConnection(tls_active=ctx.implicit_tls)
        # net.driver rule 2: the core holds less than a SASL line when it asks for more.
        self.driver = SessionDriver(stream, self.conn, need=NEED_DATA, output=self.conn.data_to_send,
                                    flush_at=self.settings.flush_threshold,
                                    max_buffered=self.conn.max_auth_line + READ_SIZE, service=ctx.service)
        self.login = Pop3Login(ctx.authenticator, stream.peer_ip)
        self.user: str | None = None  # the account whose maildrop lock this session holds
        self.mailbox: Pop3Mailbox | None = None
        self._ahead: tuple[int, asyncio.Future[bytes]] | None = None  # rule 9: (uid, its read)
        self.maildrop: Maildrop | None = None
        self.commands = 0
        self.errors = 0

    # -- lifecycle (net.listener.Session) ------------------------------------------------------
    async def run(self) -> None:
        await self.driver.run(self)

    def shutdown(self) -> None:
        """Rule 7."""
        self.driver.shutdown()

    # -- the driver's handler (net.driver.Handler) ------------------------------------------------
    async def start(self) -> None:
        maillog.connect(self.stream.peer_ip, self.ctx.service)
        self.stream.timeout = self.settings.idle_timeout  # rule 4
        if self.ctx.implicit_tls and not self.stream.tls_active:  # rule 6: pop3s
            tls = self.ctx.tls
            if tls is None:  # pragma: no cover - the factory refuses implicit TLS without it
                raise TlsHandshakeFailed("no TLS configured")
            await self.driver.handshake(tls.context(), self.settings.handshake_timeout)
        s = self.settings
        self.conn.send(Response(True, f"{s.hostname} {s.software} POP3 server ready"))

    async def handle(self, event: ev.Event | NeedData) -> bool:
        conn = self.conn
        if isinstance(event, ev.ConnectionClosed) or event is NEED_DATA:  # the driver never passes NEED_DATA
            return True
        if isinstance(event, ev.CommandRejected):
            self.errors += 1
            log.info("pop3: rejected %s client=%s: %s", event.verb or "line", self.stream.peer_ip, event.response)
            if self.errors >= self.settings.max_bad_commands:  # rule 5
                conn.close(ERR_TOO_MANY_ERRORS)
                log.warning("pop3: too many bad commands client=%s errors=%d", self.stream.peer_ip, self.errors)
                return True
            return False
        self.commands += 1
        await self._handle(event)
        return conn.state is Pop3State.CLOSED

    def farewell(self, ending: Ending) -> bytes:
        if ending is Ending.TIMEOUT:  # rule 4: closed without a response and without UPDATE
            log.info("pop3: autologout after %.0fs idle client=%s user=%s", self.stream.timeout,
                     self.stream.peer_ip, self.user)
            return b""
        return ERR_SHUTTING_DOWN.to_bytes()  # rule 7

    async def finish(self) -> None:
        await self._release()  # rule 8
        maillog.disconnect(self.stream.peer_ip, self.ctx.service, self.commands, self.errors)

    async def _release(self) -> None:
        mailbox, self.mailbox, self.maildrop = self.mailbox, None, None
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            await asyncio.wait([ahead[1]])  # rule 9: no read may outlive the mailbox it reads
        if self.user is not None:
            self.ctx.locks.release(self.user)
            self.user = None
        if mailbox is not None:
            try:
                await asyncio.to_thread(mailbox.close)
            except Exception:
                log.exception("pop3: closing the mailbox failed client=%s", self.stream.peer_ip)

    # -- commands --------------------------------------------------------------------------
    def _secure(self) -> bool:
        return plaintext_allowed(self.conn.tls_active, self.stream.peer_ip, self.settings.allow_plaintext_on_loopback)

    async def _handle(self, event: ev.Command) -> None:
        conn = self.conn
        match event:
            case ev.User() | ev.Pass() | ev.Auth() | ev.AuthResponse():
                result = await self.login.handle(event, self._secure())
                response: AnyResponse = result.response
                if result.user is not None:
                    response = await self._open(result.user)
                conn.send(response)
                if result.close:
                    conn.close()
            case ev.Capa():
                conn.send(self._capa())
            case ev.Stls():
                await self._stls()
            case ev.Quit():
                conn.send(await self._quit())
            case _:
                conn.send(await self._transaction(event))

    def _capa(self) -> MultiLine:
        authorization = self.conn.state is Pop3State.AUTHORIZATION
        secure = self._secure()
        lines = capabilities(
            user=authorization and secure,
            sasl=self.ctx.authenticator.mechanisms(secure) if authorization else (),
            stls=authorization and self._stls_possible(),
            implementation=self.settings.software,
        )
        return MultiLine.of_lines(Response(True, "Capability list follows"), lines)

    def _stls_possible(self) -> bool:
        return self.ctx.tls is not None and not self.conn.tls_active

    async def _stls(self) -> None:
        """Rule 6."""
        tls = self.ctx.tls
        if tls is None or not self._stls_possible():
            self.conn.send(ERR_TLS_UNAVAILABLE)
            return
        self.conn.send(Response(True, "Begin TLS negotiation"))
        # the core and the stream drop what was pipelined in clear; a failed handshake
        # (TlsHandshakeFailed) ends the session quietly
        await self.driver.start_tls(tls.context(), self.settings.handshake_timeout)

    async def _open(self, user: str) -> Response:
        """Rule 2: lock and snapshot the maildrop of a verified account."""
        client = self.stream.peer_ip
        if not self.ctx.locks.acquire(user):
            log.warning("pop3: maildrop of %s already locked client=%s", user, client)
            return ERR_IN_USE
        self.user = user
        try:
            address = parse_address(user, utf8=True)
            mailbox, uidvalidity, messages = await asyncio.to_thread(self._select, address)
        except Exception:  # AddressError or any store failure: rule 2
            log.exception("pop3: cannot open the maildrop of %s client=%s", user, client)
            self.ctx.locks.release(user)
            self.user = None
            return ERR_SYS_TEMP
        self.mailbox = mailbox
        self.maildrop = Maildrop(uidvalidity, messages)
        count, octets = self.maildrop.stat()
        log.info("pop3: login user=%s client=%s messages=%d octets=%d", user, client, count, octets)
        return Response(True, f"Logged in, maildrop has {count} messages ({octets} octets)")

    def _select(self, address: Address) -> tuple[Pop3Mailbox, int, list[tuple[int, int]]]:
        """In a worker thread: open INBOX and take the snapshot."""
        mailbox = self.ctx.store.account(address).select(self.settings.mailbox)
        try:
            messages = [(m.uid, m.size) for m in mailbox.messages()]
        except BaseException:
            mailbox.close()
            raise
        return mailbox, mailbox.uidvalidity, messages

    async def _quit(self) -> Response:
        """RFC 1939 §6 (UPDATE) or §4 (QUIT in AUTHORIZATION); rule 3."""
        bye = f"{self.settings.hostname} POP3 server signing off"
        if self.conn.state is not Pop3State.UPDATE or self.mailbox is None or self.maildrop is None:
            return Response(True, bye)
        maildrop, mailbox = self.maildrop, self.mailbox
        uids = maildrop.to_remove()
        try:
            await asyncio.to_thread(self._update, mailbox, uids, maildrop.to_mark_seen())
        except Exception:
            log.exception("pop3: removing %d messages of %s failed client=%s", len(uids), self.user, self.stream.peer_ip)
            return ERR_NOT_REMOVED
        left = len(maildrop) - len(uids)
        log.info("pop3: logout user=%s client=%s deleted=%d left=%d", self.user, self.stream.peer_ip, len(uids), left)
        await self._release()  # before +OK: a client that logs in again at once finds the lock free
        return Response(True, f"{bye} ({left} messages left)")

    def _update(self, mailbox: Pop3Mailbox, remove: Sequence[int], seen: Sequence[int]) -> None:
        """In a worker thread: mark kept retrieved messages seen, then remove the deleted."""
        if seen:
            try:
                mailbox.store(seen, "add", SEEN)
            except Exception:  # the \Seen flag is a courtesy to IMAP clients; removal matters
                log.exception("pop3: marking %d messages seen failed", len(seen))
        if remove:
            mailbox.remove(remove)

    async def _transaction(self, event: ev.Command) -> AnyResponse:
        """STAT LIST UIDL RETR TOP DELE NOOP RSET (RFC 1939 §5, §7)."""
        maildrop = self.maildrop
        if maildrop is None:  # pragma: no cover - the core only lets these through in TRANSACTION
            return ERR_SYS_TEMP
        match event:
            case ev.Stat():
                count, octets = maildrop.stat()
                return Response(True, f"{count} {octets}")
            case ev.List(msg=None):
                count, octets = maildrop.stat()
                lines = (f"{e.number} {e.size}" for e in maildrop.live())
                return MultiLine.of_lines(Response(True, f"{count} messages ({octets} octets)"), lines)
            case ev.Uidl(msg=None):
                lines = (f"{e.number} {maildrop.unique_id(e)}" for e in maildrop.live())
                return MultiLine.of_lines(Response(True, "Unique-ID listing follows"), lines)
            case ev.List(msg=int(n)):
                found = maildrop.message(n)
                return found if isinstance(found, Response) else Response(True, f"{n} {found.size}")
            case ev.Uidl(msg=int(n)):
                found = maildrop.message(n)
                return found if isinstance(found, Response) else Response(True, f"{n} {maildrop.unique_id(found)}")
            case ev.Retr(msg=n):
                return await self._retrieve(maildrop, n, None)
            case ev.Top(msg=n, lines=k):
                return await self._retrieve(maildrop, n, k)
            case ev.Dele(msg=n):
                found = maildrop.delete(n)
                return found if isinstance(found, Response) else Response(True, f"Message {n} deleted")
            case ev.Noop():
                return OK
            case ev.Rset():
                maildrop.reset()
                count, octets = maildrop.stat()
                return Response(True, f"Maildrop has {count} messages ({octets} octets)")
        log.error("pop3: unhandled command %r", event)  # pragma: no cover
        return ERR_SYS_TEMP  # pragma: no cover

    async def _retrieve(self, maildrop: Maildrop, number: int, lines: int | None) -> AnyResponse:
        """RETR (``lines`` None) or TOP."""
        found = maildrop.message(number)
        if isinstance(found, Response):
            return found
        data = await self._read(found)
        if isinstance(data, Response):
            return data
        if lines is None:
            maildrop.retrieved.add(number)
            self._read_ahead(maildrop, number + 1)
            return MultiLine(Response(True, f"{found.size} octets"), data)
        return MultiLine(Response(True, "Top of message follows"), top(data, lines))

    def _read_ahead(self, maildrop: Maildrop, number: int) -> None:
        """Rule 9: start reading message ``number`` in a worker thread."""
        self._ahead = None
        mailbox = self.mailbox
        found = maildrop.message(number)
        if mailbox is None or isinstance(found, Response) or found.size > READ_AHEAD_MAX:
            return
        task = asyncio.ensure_future(asyncio.to_thread(mailbox.read, found.uid))
        task.add_done_callback(_consume)
        self._ahead = (found.uid, task)

    async def _read(self, entry: Entry) -> bytes | Response:
        mailbox = self.mailbox
        if mailbox is None:  # pragma: no cover - set with the maildrop
            return ERR_SYS_TEMP
        ahead, self._ahead = self._ahead, None
        try:
            if ahead is not None and ahead[0] == entry.uid:
                return await ahead[1]
            return await asyncio.to_thread(mailbox.read, entry.uid)
        except Exception as exc:
            if getattr(exc, "code", None) in GONE_CODES:
                log.info("pop3: message uid=%d of %s is gone client=%s", entry.uid, self.user, self.stream.peer_ip)
                return ERR_GONE
            log.exception("pop3: reading message uid=%d of %s failed", entry.uid, self.user)
            return ERR_SYS_TEMP
