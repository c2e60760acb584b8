"""One IMAP session: the state table and the command handlers around the sans-IO core.

Rules:
1. The session driver (``net.driver``) reads, writes, times out and upgrades to TLS; it hands
   each event of the sans-IO core (``proto.imap.ImapServerConnection``, the framing) to
   ``handle``. The core frames commands; ``parser`` types
   them; this module checks the state (RFC 3501 §3: not authenticated, authenticated,
   selected, logout) through ``_TABLE`` and calls the command family's handler (``auth``,
   ``mailboxes``, ``select``, ``fetch``, ``search``, ``store``, ``append``). A command not
   allowed in the current state is ``BAD``.
2. After every command in the selected state the session picks up others' changes and writes
   them before the tagged completion (``selected`` rules 2-3); after FETCH, STORE and SEARCH
   (not their UID forms) without expunges (RFC 3501 §7.4.1, RFC 9051 §7.5.1).
3. IDLE (RFC 2177) waits for a change notice on the selected folder (``store.changes``: local
   deliveries and other sessions' changes in this process send one at once), and otherwise
   syncs every ``IDLE_POLL`` seconds for changes made by other programs (mutt); it ends at
   ``DONE``, at the autologout, or at shutdown. While it waits, the folder's IDLE group
   (``idlewake``) syncs its view and writes its updates without waking its task.
4. Limits: framing limits are the core's (``limits.max_line_length`` per line,
   ``limits.max_message_size`` per APPEND literal; a literal over them is ``NO [TOOBIG]``).
   Before login a literal over ``PREAUTH_MAX_LITERAL`` (8 KiB) is ``BAD`` with no ``+``, and
   such a non-synchronising one ends the session with ``* BYE`` (the core reads none of it);
   after login, big APPEND literals go to a file, never to memory (``append`` rule 4).
   ``limits.max_errors`` bad commands (20, Postfix's smtpd_hard_error_limit) end the session with
   ``* BYE``; the inactivity autologout is at least 30 minutes (RFC 3501 §5.4) or
   ``limits.session_timeout`` when larger. Output is written whenever ``FLUSH_AT`` octets are
   pending (the driver's ``flush_at``), so a big FETCH never piles up in memory.
5. ``shutdown`` (server stopping): a session waiting for input writes ``* BYE`` and closes; one
   busy with a command finishes it first.
6. Bad input is a ``BAD`` (or ``NO``) with a reason, never a crash; an unexpected error in a
   handler is logged and answered ``NO [SERVERBUG]``, except a full disk, which is
   ``NO [OVERQUOTA]`` with a reason (RFC 5530 §3): the user can act on it.

What can go wrong: connection errors and failed TLS handshakes end the session quietly (debug
log); a deleted selected mailbox ends it with ``* BYE``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from pigeon import maillog
from pigeon.auth.sasl import plaintext_allowed
from pigeon.imapd import append, auth, fetch, mailboxes, search, select, store
from pigeon.imapd.append import LiteralSpool
from pigeon.imapd.idlewake import IdleTicket
from pigeon.imapd.replies import SERVERBUG, Done, SessionEnd, bad, no, ok
from pigeon.imapd.selected import Modes, Selected
from pigeon.net.driver import Ending, SessionDriver
from pigeon.net.listener import READ_SIZE, Stream
from pigeon.proto.imap import commands as c
from pigeon.proto.imap import mutf7, serialize
from pigeon.proto.imap.connection import LITERAL_PIECE, ImapServerConnection
from pigeon.proto.imap.errors import CharsetError, MUtf7Error, ParseError, SeqSetError
from pigeon.proto.imap.events import (
    BadCommand,
    Command,
    ConnectionClosed,
    ImapEvent,
    LiteralData,
    LiteralTooBig,
    NeedContinuation,
    RawLine,
)
from pigeon.proto.imap.parser import parse_command
from pigeon.store.mailbox import Account, MailboxError, disk_full

if TYPE_CHECKING:
    from pigeon.imapd.factory import ImapSessionFactory

log = logging.getLogger(__name__)

#: RFC 3501 §5.4: an inactivity autologout timer MUST last at least 30 minutes.
AUTOLOGOUT: Final = 30 * 60.0
#: IDLE syncs this often without a change notice, for changes by programs outside this process
#: (deliveries and sessions of this server notify at once; rule 3). Dovecot's
#: mailbox_idle_check_interval, in the same role, is 30 s by default. Every idle session pays
#: one sync per period: 10,000 sessions at 5 s were 2,000 syncs a second of a busy server's
#: time, at 30 s they are 333 (docs/benchmarks.md, "IDLE sessions").
IDLE_POLL: Final = 30.0
#: Pending output is written once it reaches this size (rule 4).
FLUSH_AT: Final = 256 * 1024

BASE_CAPABILITIES: Final = (
    "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT CHILDREN UIDPLUS MOVE "
    "CONDSTORE QRESYNC SPECIAL-USE CREATE-SPECIAL-USE LIST-EXTENDED LIST-STATUS ESEARCH SEARCHRES "
    "STATUS=SIZE UTF8=ACCEPT BINARY MULTIAPPEND"
)


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

Handler = Callable[..., Awaitable[Done | None]]


class ImapSession:
    """One connection (rules 1-6): the handler the session driver calls (``net.driver``)."""

    def __init__(self, stream: Stream, ctx: ImapSessionFactory) -> None:
        self.stream = stream
        self.ctx = ctx
        self.cfg = ctx.config()
        limits = self.cfg.limits
        self.conn = ImapServerConnection(max_line=max(1024, limits.max_line_length),
                                         max_literal=limits.max_message_size)
        # net.driver rule 2: the core holds at most a line, or a literal kept whole (at most a
        # line, or a LITERAL_PIECE of an APPEND), when it asks for more; plus one read.
        self.driver = SessionDriver(stream, self.conn, need=None, flush_at=FLUSH_AT,
                                    max_buffered=max(self.conn.max_line, LITERAL_PIECE) + READ_SIZE,
                                    service=ctx.service)
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.account: Account | None = None
        self.sel: Selected | None = None
        self.modes = Modes()
        self.saved: list[int] | None = None  # SEARCHRES "$" as UIDs (RFC 5182)
        self.commands = 0
        self.errors = 0
        self.literals = LiteralSpool(lambda: self.acct().temporary_file())  # append rule 4

    # -- lifecycle (net.listener.Session) -----------------------------------------------------

    async def run(self) -> None:
        await self.driver.run(self)

    def shutdown(self) -> None:
        """Rule 5."""
        self.driver.shutdown()

    # -- the driver's handler (net.driver.Handler) ------------------------------------------------

    async def start(self) -> None:
        maillog.connect(self.stream.peer_ip, self.ctx.service)
        self.stream.timeout = max(AUTOLOGOUT, self.cfg.limits.session_timeout)  # rule 4
        self.emit(serialize.untagged_status("OK", "Pigeon IMAP ready", f"CAPABILITY {self.capabilities()}"))

    def farewell(self, ending: Ending) -> bytes:
        if ending is Ending.TIMEOUT:
            log.info("imap: autologout after %.0fs idle client=%s user=%s", self.stream.timeout,
                     self.stream.peer_ip, self.user)
            return serialize.untagged_status("BYE", "Autologout; idle for too long")
        return serialize.untagged_status("BYE", "Server shutting down", "UNAVAILABLE")  # rule 5

    async def finish(self) -> None:
        self.literals.clear()
        sel, self.sel = self.sel, None
        if sel is not None:
            try:
                await sel.close()
            except Exception:
                log.exception("imap: closing the mailbox failed client=%s", self.stream.peer_ip)
        maillog.disconnect(self.stream.peer_ip, self.ctx.service, self.commands, self.errors)

    async def handle(self, ev: ImapEvent | None) -> bool:
        """One framed event; True once the session is over (LOGOUT, or the client closed)."""
        if isinstance(ev, ConnectionClosed):
            if ev.reason is not None:
                raise SessionEnd(ev.reason)  # rule 4: the core refused to read on
            return True
        if isinstance(ev, NeedContinuation):
            self.emit(serialize.continuation("Ready for literal data"))
        elif isinstance(ev, LiteralData):
            self.literals.write(ev.data, ev.last)
        elif isinstance(ev, LiteralTooBig):
            self.literals.clear()
            if self.state is State.NOT_AUTHENTICATED:  # rule 4, RFC 3501 §7.5: no "+"
                self._bad(ev.tag, f"Literal of {ev.size} octets is too big before authentication")
            else:  # RFC 7888 §4, RFC 9051 §7.1: NO [TOOBIG] for a literal we will not take
                self.emit(serialize.tagged(ev.tag, "NO", f"Literal of {ev.size} octets is too big", "TOOBIG"))
        elif isinstance(ev, BadCommand):
            self.literals.clear()
            self._bad(ev.tag, ev.reason)
        elif isinstance(ev, Command):
            try:
                await self._command(ev)
            finally:
                self.literals.clear()
        else:  # RawLine without expect_line cannot happen
            log.error("imap: unexpected event %r", ev)
        return self.state is State.LOGOUT

    # -- output and input (for the command handlers) --------------------------------------------

    def emit(self, data: bytes) -> None:
        self.driver.emit(data)

    async def drain(self) -> None:
        """Write pending output once there is enough of it (rule 4)."""
        await self.driver.drain()

    async def flush(self) -> None:
        await self.driver.flush()

    async def read_line(self) -> bytes | None:
        """One raw line (an AUTHENTICATE response); None when the connection closed."""
        self.conn.expect_line()
        while True:
            ev = await self.driver.next_event()  # at shutdown: "* BYE [UNAVAILABLE]" (rule 5)
            if isinstance(ev, RawLine):
                return ev.line
            if isinstance(ev, ConnectionClosed):
                return None
            if isinstance(ev, BadCommand):
                return b"*"  # an over-long response line: cancel the exchange

    def _bad(self, tag: str | None, reason: str) -> None:
        self.errors += 1
        if tag is None:
            self.emit(serialize.untagged_status("BAD", reason))
        else:
            self.emit(serialize.tagged(tag, "BAD", reason))
        if self.errors >= self.cfg.limits.max_errors:  # rule 4
            log.warning("imap: too many bad commands client=%s errors=%d", self.stream.peer_ip, self.errors)
            raise SessionEnd("Too many invalid commands")

    async def _command(self, ev: Command) -> None:
        self.commands += 1
        try:
            cmd = parse_command(ev)
        except CharsetError as exc:
            self.emit(serialize.tagged(ev.tag, "NO", exc.reason, "BADCHARSET (UTF-8 US-ASCII)"))
            return
        except ParseError as exc:
            self._bad(ev.tag, exc.reason)
            return
        entry = _TABLE.get(type(cmd))
        if entry is None or self.state not in entry[1]:
            self._bad(ev.tag, f"{ev.name or 'command'} not allowed in the {self.state.value} state")
            return
        handler, _, mode = entry
        if mode == "noexpunge" and getattr(cmd, "uid", False):
            mode = "full"
        try:
            done = await handler(self, cmd)
            if done is None:
                return  # already answered (STARTTLS)
            if self.sel is not None and mode != "none":
                await self.updates(allow_expunge=mode == "full")
        except SessionEnd:
            raise
        except MUtf7Error as exc:  # mailboxes rule 5: a well-formed command naming no mailbox
            if isinstance(cmd, (c.Create, c.Rename)):
                done = no(f"Bad mailbox name (not modified UTF-7): {exc}", "CANNOT")
            else:
                done = no(f"No such mailbox (the name is not modified UTF-7: {exc})", "NONEXISTENT")
        except SeqSetError as exc:
            done = bad(f"Invalid sequence set: {exc}")
        except ParseError as exc:
            done = bad(exc.reason)
        except MailboxError as exc:
            done = no(exc.text, exc.code)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:
            if disk_full(exc):  # Rule 6
                log.warning("imap: %s failed user=%s client=%s: the disk is full (%s)",
                            ev.name, self.user, self.stream.peer_ip, exc)
                done = no("The disk is full; delete some mail and try again", "OVERQUOTA")
            else:
                log.exception("imap: %s failed user=%s client=%s", ev.name, self.user, self.stream.peer_ip)
                done = SERVERBUG
        if done.status == "BAD":
            self._bad(ev.tag, done.text)
            return
        self.emit(serialize.tagged(ev.tag, done.status, done.text, done.code))

    async def updates(self, allow_expunge: bool) -> None:
        """Rule 2; a vanished mailbox ends the session."""
        if self.sel is None:
            return
        try:
            self.emit(await self.sel.updates(allow_expunge, self.ctx.syncs))
        except MailboxError as exc:
            if exc.code == "NONEXISTENT":
                raise SessionEnd("The selected mailbox has been deleted or renamed") from None
            raise

    # -- helpers for the handlers -----------------------------------------------------------

    def secure(self) -> bool:
        return plaintext_allowed(self.stream.tls_active, self.stream.peer_ip,
                                 self.cfg.auth.allow_plaintext_on_loopback)

    def capabilities(self) -> str:
        caps = [BASE_CAPABILITIES, f"APPENDLIMIT={self.cfg.limits.max_message_size}"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.ctx.tls is not None and not self.stream.tls_active:
                caps.append("STARTTLS")
            if self.secure():
                caps.append("AUTH=PLAIN AUTH=LOGIN")
            else:
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3, RFC 9051 §6.2.3
        return " ".join(caps)

    def name_in(self, raw: str) -> str:
        """A mailbox name as the client sent it → the store's UTF-8 name (RFC 3501 §5.1.3)."""
        if self.modes.utf8:
            return raw
        name = mutf7.decode(raw)
        return "INBOX" if name.upper() == "INBOX" else name

    def name_out(self, name: str) -> bytes:
        return serialize.mailbox(name, utf8=self.modes.utf8)

    def acct(self) -> Account:
        if self.account is None:  # pragma: no cover - the state table guarantees it
            raise RuntimeError("no account in the authenticated state")
        return self.account

    def logged_in(self, user: str, account: Account) -> Done:
        self.user = user
        self.account = account
        self.state = State.AUTHENTICATED
        self.conn.logged_in()  # rule 4: the pre-login literal limits end here
        return ok("Logged in", f"CAPABILITY {self.capabilities()}")

    async def deselect(self) -> None:
        sel = self.detach()
        if sel is not None:
            await sel.close()

    def detach(self) -> Selected | None:
        """Leave the selected state; the caller closes the returned mailbox (SELECT does it
        in the same worker-thread call that opens the next one)."""
        sel, self.sel = self.sel, None
        self.saved = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED
        return sel

    def select(self, sel: Selected) -> None:
        self.sel = sel
        self.state = State.SELECTED

    def enable_condstore(self) -> None:
        """A CONDSTORE-enabling command was used (RFC 7162 §3.1)."""
        self.modes.condstore = True

    # -- commands of any state --------------------------------------------------------------

    async def _capability(self, cmd: c.Capability) -> Done:
        self.emit(serialize.untagged(f"CAPABILITY {self.capabilities()}"))
        return ok("CAPABILITY completed")

    async def _noop(self, cmd: c.Noop | c.Check) -> Done:
        return ok(f"{type(cmd).__name__.upper()} completed")

    async def _logout(self, cmd: c.Logout) -> Done:
        self.emit(serialize.untagged_status("BYE", "Logging out"))
        self.state = State.LOGOUT
        return ok("LOGOUT completed")

    async def _starttls(self, cmd: c.StartTls) -> Done | None:
        tls = self.ctx.tls
        if tls is None or self.stream.tls_active:
            return bad("STARTTLS is not available")
        if self.driver.read_pending:  # pragma: no cover - no read is pending between commands
            return bad("STARTTLS must be the last command sent")
        self.emit(serialize.tagged(cmd.tag, "OK", "Begin TLS negotiation now"))
        # RFC 3501 §6.2.1: the core and the stream forget what was pipelined in clear; a failed
        # handshake (TlsHandshakeFailed) ends the session quietly. The handshake has the
        # listener's TLS_HANDSHAKE_TIMEOUT, as STARTTLS in SMTP.
        await self.driver.start_tls(tls.context())
        return None

    async def _enable(self, cmd: c.Enable) -> Done:
        done = []
        for cap in cmd.capabilities:  # RFC 5161 §3.1: unknown ones are ignored
            if cap == "CONDSTORE":
                self.modes.condstore = True
            elif cap == "QRESYNC":
                self.modes.qresync = self.modes.condstore = True  # RFC 7162 §3.2.3
            elif cap == "UTF8=ACCEPT":
                self.modes.utf8 = True
            elif cap == "IMAP4REV2":
                self.modes.rev2 = True
            else:
                continue
            done.append(cap)
        self.emit(serialize.untagged(("ENABLED " + " ".join(done)).strip()))
        return ok("ENABLE completed")

    async def _id(self, cmd: c.Id) -> Done:
        self.emit(serialize.untagged(b'ID ("name" "Pigeon")'))  # RFC 2971 §3.2
        return ok("ID completed")

    async def _idle(self, cmd: c.Idle) -> Done:
        """Rule 3."""
        self.emit(serialize.continuation("idling"))
        self.conn.expect_line()
        if self.sel is None:  # IDLE in the authenticated state: nothing to report, wait for DONE
            return await self._idle_loop(None)
        ticket = self.ctx.idlers.enter(self.sel, self.stream)
        try:
            return await self._idle_loop(ticket)
        finally:
            self.ctx.idlers.leave(ticket)

    async def _idle_loop(self, ticket: IdleTicket | None) -> Done:
        sync = ticket is not None
        while True:
            if sync:
                await self.updates(allow_expunge=True)
                sync = False
            ev = self.conn.next_event()
            if ev is None:
                if ticket is None:
                    await self.driver.fill()
                    continue
                if not self.ctx.idlers.ready(ticket):  # idlewake rule 3: a notice came meanwhile
                    sync = True
                    continue
                # net.driver rule 8: input, the poll interval, or the group handing this session
                # its updates (idlewake rule 4); the group writes the usual ones itself (rule 2).
                # At shutdown the driver ends the session with "* BYE [UNAVAILABLE]" (rule 5).
                try:
                    got = await self.driver.fill(timeout=IDLE_POLL, wake=ticket.wake)
                finally:
                    batch = self.ctx.idlers.hold(ticket)
                if batch is not None:
                    await batch.done  # idlewake rule 5
                ticket.wake.clear()
                self._late(ticket.take_late())
                sync = not got  # the poll interval: changes by other programs (rule 3)
                continue
            if isinstance(ev, RawLine):
                if ev.line.strip().upper() == b"DONE":
                    return ok("IDLE terminated")
                return bad("Expected DONE")
            if isinstance(ev, ConnectionClosed):
                raise ConnectionResetError("closed during IDLE")
            return bad("Expected DONE")

    def _late(self, late: bytes | Exception | None) -> None:
        """What the IDLE group left for this session (idlewake rule 4): written through the
        driver, or raised as the session's own sync would (``updates``)."""
        if late is None:
            return
        if isinstance(late, bytes):
            self.emit(late)
            return
        if isinstance(late, MailboxError) and late.code == "NONEXISTENT":
            raise SessionEnd("The selected mailbox has been deleted or renamed")
        raise late


async def _select_check(s: ImapSession, cmd: c.Check) -> Done:
    return await s._noop(cmd)


_TABLE: Final[dict[type, tuple[Handler, frozenset[State], str]]] = {
    c.Capability: (ImapSession._capability, _ANY, "full"),
    c.Noop: (ImapSession._noop, _ANY, "full"),
    c.Logout: (ImapSession._logout, _ANY, "none"),
    c.StartTls: (ImapSession._starttls, _NOT_AUTH, "none"),
    c.Authenticate: (auth.authenticate, _NOT_AUTH, "none"),
    c.Login: (auth.login, _NOT_AUTH, "none"),
    c.Enable: (ImapSession._enable, _AUTH, "none"),
    c.Id: (ImapSession._id, _ANY, "full"),
    c.Idle: (ImapSession._idle, _AUTH, "full"),
    c.Select: (select.select, _AUTH, "none"),
    c.Create: (mailboxes.create, _AUTH, "full"),
    c.Delete: (mailboxes.delete, _AUTH, "full"),
    c.Rename: (mailboxes.rename, _AUTH, "full"),
    c.Subscribe: (mailboxes.subscribe, _AUTH, "full"),
    c.Unsubscribe: (mailboxes.subscribe, _AUTH, "full"),
    c.List: (mailboxes.list_, _AUTH, "full"),
    c.Lsub: (mailboxes.lsub, _AUTH, "full"),
    c.Namespace: (mailboxes.namespace, _AUTH, "full"),
    c.Status: (mailboxes.status, _AUTH, "full"),
    c.Append: (append.append, _AUTH, "full"),
    c.Check: (_select_check, _SELECTED, "full"),
    c.Close: (select.close, _SELECTED, "none"),
    c.Unselect: (select.unselect, _SELECTED, "none"),
    c.Expunge: (select.expunge, _SELECTED, "full"),
    c.Search: (search.search, _SELECTED, "noexpunge"),
    c.Fetch: (fetch.fetch, _SELECTED, "noexpunge"),
    c.Store: (store.store, _SELECTED, "noexpunge"),
    c.Copy: (store.copy, _SELECTED, "full"),
    c.Move: (store.move, _SELECTED, "full"),
}
