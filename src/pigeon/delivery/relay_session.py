"""One outbound SMTP transaction to one address of one mail exchanger (the I/O around the core).

``send_to_host`` connects, greets, optionally upgrades to TLS, sends one message to all of its
recipients and says what happened to each; ``pigeon.delivery.relay`` decides which host to try
and what the outcome means for the queue. The connection itself (replies, commands, STARTTLS,
AUTH, QUIT, and the failures they raise) is ``delivery.relay_peer.Peer``.

Rules:
1. EHLO first; a 5xx to EHLO falls back to HELO (RFC 5321 §4.1.1.1, §3.2). Without EHLO no
   extension is used.
2. STARTTLS when offered and a TLS context is configured (opportunistic; certificates are not
   verified unless the context says so). After TLS, EHLO again (RFC 3207 §4.2). A handshake
   failure raises ``TlsFailed``: the caller retries the same address in plaintext, as Postfix
   does for opportunistic TLS. A non-220 answer to STARTTLS continues in plaintext.
3. A message needing SMTPUTF8 to a peer without it fails every recipient with ``553 5.6.7``
   (RFC 6531 §3.5: no downgrade of UTF-8 local parts). Otherwise UTF-8 domains are sent as
   A-labels.
4. SIZE: a message larger than the peer's announced fixed limit fails with ``552 5.3.4`` before
   MAIL (RFC 1870 §6); ``SIZE=`` is sent when the peer has SIZE.
5. An 8-bit body to a peer without 8BITMIME is converted to 7-bit (``mime7bit``, RFC 6152 §3);
   with 8BITMIME it is sent with ``BODY=8BITMIME``. BINARYMIME goes by BDAT to a peer with
   CHUNKING and BINARYMIME, else it is converted as well.
6. DSN parameters (RET, ENVID, NOTIFY, ORCPT) are sent only to a peer with DSN (RFC 3461 §4).
7. With PIPELINING, MAIL, every RCPT and DATA go in one write (RFC 2920 §3.1: DATA last); else
   one command at a time. With CHUNKING the body goes as BDAT chunks (RFC 3030), else DATA
   with dot-stuffing (the core).
8. Per-recipient outcome: the RCPT reply when it was not 2xx; else the reply to the end of the
   data (or to DATA itself when that was refused). 2xx → delivered, 4xx → deferred, 5xx → failed.
9. Anything that goes wrong before the end of the data has been sent (connect refused, timeout,
   greeting/EHLO/MAIL refused, connection lost) raises ``HostFailure(try_next=True)``: nothing
   was accepted, another host may be tried. A connection lost or a timeout after the final
   ``.`` raises ``HostFailure(try_next=False)``: the peer may have the message (RFC 1047), so it
   is deferred, never sent to another host in the same attempt.
10. Timeouts per RFC 5321 §4.5.3.2 (``RelayTimeouts``).
11. With ``require_tls`` (the smarthost), a peer without STARTTLS or a failed handshake defers
    the message (``451 4.7.5``): nothing is sent in the clear, not even the login.
12. With ``login``, AUTH PLAIN (RFC 4616) with an initial response, or AUTH LOGIN when the
    peer offers only that, after TLS and before MAIL (RFC 4954 §4). A refused login defers
    the message (the operator must fix the credentials; the mail waits meanwhile).
13. With ``sign`` (``delivery.outbound``), the header fields it returns for the exact octets
    sent — the converted form when Rule 5 converts — are put in front of them, so the
    signatures verify at the receiver whatever the peer's extensions (the message is then
    held in memory while it is sent, as a converted one already is).

14. ``peer_check`` (DANE, RFC 7672 §3): after the TLS handshake the peer's chain is given to
    it; a reason back means the host is not used (``451 4.7.5``, the next MX is tried) and
    nothing is sent. A ``HostFailure`` carries ``tls_result``, the RFC 8460 §4.3 result type
    of a TLS failure, for TLS-RPT.
15. A REQUIRETLS message (RFC 8689 §4.1) goes only to a peer that offers REQUIRETLS after TLS,
    with ``REQUIRETLS`` on MAIL FROM; otherwise the host is skipped with ``550 5.7.30``.
16. A cached connection (``delivery.conncache`` Rule 1) is checked with ``RSET``
    (RFC 5321 §4.1.1.5). To a peer with PIPELINING the ``RSET`` leads the transaction's
    group (RSET, MAIL, RCPT…, DATA in one write; RFC 2920 §3.1 lets RSET stand anywhere in a
    group), which saves a round trip per relayed message (docs/benchmarks.md, "2026-12-07
    20:48–22:00"). If it fails (connection lost, not 2xx), the connection is closed before any
    data was sent, so nothing can have been accepted on it, and the transaction runs on the
    next cached connection or a new one. Without PIPELINING, ``RSET`` is a round trip of its own.

What can go wrong: every network or protocol error becomes ``HostFailure`` or ``TlsFailed``;
nothing else escapes except programming errors.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import BinaryIO, Literal

from pigeon.core.address import Address
from pigeon.core.envelope import Recipient
from pigeon.core.results import Status
from pigeon.delivery import mime7bit
from pigeon.delivery.conncache import Cached, ConnectionCache
from pigeon.delivery.relay_peer import (
    C451_TLS_REQUIRED,
    HostFailure,
    Peer,
    RelayTimeouts,
    SessionSettings,
    TlsFailed,
)
from pigeon.delivery.relay_route import MxHost, to_ascii
from pigeon.proto.smtp.ehlo import Extensions
from pigeon.proto.smtp.events import Command, Data, MailFrom, MailParams, RcptTo, Rset
from pigeon.proto.smtp.reply import Reply
from pigeon.queue.api import BodySource

__all__ = [  # relay.py's names: the peer's types are part of this module's interface
    "C451_TLS_REQUIRED", "C550_REQUIRETLS", "HostFailure", "HostResult", "OutboundMessage",
    "RelayTimeouts", "SessionCache", "SessionSettings", "TlsFailed", "send_to_host", "status_of",
]

log = logging.getLogger(__name__)

C553_NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Message needs SMTPUTF8, which the remote server does not offer")
C550_REQUIRETLS = Reply(550, "5.7.30", "REQUIRETLS support required")  # RFC 8689 §5
C552_TOO_BIG = Reply(552, "5.3.4", "Message is larger than the remote server accepts")


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What one transaction carries."""

    sender: Address | None
    recipients: tuple[Recipient, ...]
    body: BodySource  # the queued bytes (delivery.base Rule 1): a file, a segment or memory
    size: int  # octets in the body as queued
    eight_bit: bool  # the body holds octets above 127
    binarymime: bool  # declared BODY=BINARYMIME
    needs_smtputf8: bool  # Rule 3
    smtputf8: bool  # the sender asked for SMTPUTF8
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    sign: Callable[[bytes], bytes] | None = None  # Rule 13: message octets → fields to prepend
    requiretls: bool = False  # Rule 15


@dataclass(frozen=True, slots=True)
class HostResult:
    outcomes: tuple[tuple[Status, Reply], ...]  # one per recipient, in order
    peer_dsn: bool  # the peer took the DSN parameters (it reports from now on)
    tls: bool


def status_of(reply: Reply) -> Status:
    if reply.is_positive:
        return "delivered"
    return "deferred" if reply.is_transient else "failed"


def _ascii_address(a: Address) -> Address:
    return Address(a.local, to_ascii(a.domain)) if not a.domain.isascii() else a


def _open_body(msg: OutboundMessage, convert: bool) -> BinaryIO:
    """The octets to send (Rules 5 and 13). Blocking for a body not in memory (a thread runs it)."""
    data = msg.body.in_memory()
    if data is None and (msg.sign is not None or convert):
        with msg.body.open() as whole:
            data = whole.read()
    if data is None:
        return msg.body.open()  # streamed as queued
    if convert:
        data = mime7bit.to_7bit(data)
    if msg.sign is not None:  # Rule 13: sign what is sent
        return io.BytesIO(msg.sign(data) + data)
    return io.BytesIO(data)


def _size_of(body: BinaryIO) -> int:
    if isinstance(body, io.BytesIO):
        return len(body.getbuffer())
    return os.fstat(body.fileno()).st_size


@dataclass
class _Session:
    """An open, greeted (and logged-in) connection, as the connection cache keeps it."""

    peer: Peer
    ext: Extensions
    tls: bool

    async def close(self) -> None:
        try:
            await self.peer.quit()
        finally:
            await self.peer.aclose()


SessionCache = ConnectionCache[_Session]


class _Stale(Exception):
    """Rule 16: a cached connection failed its pipelined ``RSET``; nothing was accepted on it."""


async def _probe(session: _Session) -> bool:
    """Rule 16 without PIPELINING: the cached session answers ``RSET`` (conncache Rule 1)."""
    try:
        reply = await session.peer.command(Rset(), session.peer.t.helo)
    except HostFailure:
        return False
    return reply.is_positive


async def _open(host: MxHost, address: str, settings: SessionSettings, use_tls: bool) -> _Session:
    peer = Peer(host, address, settings)
    try:
        await peer.connect()
        greeting = await peer.reply(settings.timeouts.greeting)
        if greeting.code != 220:
            raise peer.fail(greeting, f"refused to talk to me: {greeting}")
        ext, tls = await peer.hello(use_tls)
        if settings.require_tls and not tls:  # Rule 11
            failure = peer.fail(C451_TLS_REQUIRED, "TLS is required for this host but was not negotiated",
                                try_next=True)  # nothing was sent: another MX may offer TLS
            failure.tls_result = "starttls-not-supported"
            raise failure
        if settings.peer_check is not None and peer.link is not None:  # Rule 14
            why = settings.peer_check(peer.link.peer_chain())
            if why is not None:
                log.warning("relay: %s: DANE: %s", host.label(address), why)
                failure = peer.fail(C451_TLS_REQUIRED, f"DANE: the certificate does not match: {why}",
                                    try_next=True)
                failure.tls_result = "validation-failure"
                raise failure
        if settings.login is not None:  # Rule 12
            await peer.login(ext, *settings.login)
    except BaseException:
        await peer.aclose()
        raise
    return _Session(peer, ext, tls)


async def send_to_host(host: MxHost, address: str, msg: OutboundMessage, settings: SessionSettings,
                       use_tls: bool = True, cache: SessionCache | None = None) -> HostResult:
    """One transaction (Rules 1-12), on a cached connection when there is one (Rule 16).
    Raises HostFailure or TlsFailed."""
    key = (host.name, address, host.port, use_tls, settings)
    while cache is not None and (entry := cache.take(key)) is not None:
        session = entry.conn
        session.peer.final_sent = False
        if session.ext.pipelining:
            try:
                return await _run(session, entry.uses, entry.born, msg, cache, key, probe=True)
            except _Stale:
                continue  # closed by _run; the next cached one, or a new connection
        if await _probe(session):
            return await _run(session, entry.uses, entry.born, msg, cache, key, probe=False)
        await session.peer.aclose()
    session = await _open(host, address, settings, use_tls)
    return await _run(session, 0, time.monotonic(), msg, cache, key, probe=False)


async def _run(session: _Session, uses: int, born: float, msg: OutboundMessage, cache: SessionCache | None,
               key: Hashable, *, probe: bool) -> HostResult:
    """The transaction on ``session``, which goes back to the cache after a clean end, else is
    closed (conncache Rules 1, 2)."""
    keep = False
    try:
        result = await _transaction(session.peer, session.ext, msg, probe=probe)
        if cache is not None and cache.reusable(uses + 1, born) and not session.peer.conn.closed:
            cache.put(key, Cached(session, uses + 1, born, session.close))
            keep = True
        else:
            await session.peer.quit()
        return HostResult(result[0], result[1], session.tls)
    finally:
        if not keep:
            await session.peer.aclose()


def _all(msg: OutboundMessage, status: Status, reply: Reply) -> tuple[tuple[Status, Reply], ...]:
    return tuple((status, reply) for _ in msg.recipients)


async def _transaction(peer: Peer, ext: Extensions, msg: OutboundMessage,
                       probe: bool = False) -> tuple[tuple[tuple[Status, Reply], ...], bool]:
    label = peer.host.label(peer.address)
    use_utf8 = msg.smtputf8 and ext.smtputf8
    if msg.needs_smtputf8 and not ext.smtputf8:  # Rule 3
        return _all(msg, "failed", C553_NEEDS_SMTPUTF8.with_text(
            f"{label} does not offer SMTPUTF8, which this message needs")), False
    if msg.requiretls and not (peer.conn.tls_active and ext.has("REQUIRETLS")):  # Rule 15
        raise peer.fail(C550_REQUIRETLS, "the server does not offer REQUIRETLS (RFC 8689 §4.1)", try_next=True)
    bdat_binary = msg.binarymime and ext.chunking and ext.binarymime
    convert = (msg.eight_bit and not ext.eight_bit_mime and not bdat_binary) or \
              (msg.binarymime and not bdat_binary)  # Rule 5
    if convert:
        log.info("relay: %s lacks 8BITMIME%s; converting the message to 7-bit MIME",
                 label, "/BINARYMIME" if msg.binarymime else "")
    # A body in memory is opened on the loop (no file, no thread hop); a file in a thread.
    in_memory = msg.body.in_memory() is not None
    body = _open_body(msg, convert) if in_memory else await asyncio.to_thread(_open_body, msg, convert)
    try:
        size = _size_of(body)
        if ext.size and size > ext.size:  # Rule 4
            return _all(msg, "failed", C552_TOO_BIG.with_text(
                f"Message size {size} exceeds the limit {ext.size} of {label}")), False
        body_type: Literal["8BITMIME", "BINARYMIME"] | None = None
        if bdat_binary:
            body_type = "BINARYMIME"
        elif msg.eight_bit and not convert:
            body_type = "8BITMIME"
        dsn = ext.dsn
        params = MailParams(size=size if ext.size is not None else None, body=body_type,
                            smtputf8=use_utf8, ret=msg.ret if dsn else None,
                            envid=msg.envid if dsn else None, requiretls=msg.requiretls)
        sender = msg.sender if use_utf8 or msg.sender is None else _ascii_address(msg.sender)
        cmds: list[Command] = [MailFrom(sender, params)]
        for r in msg.recipients:
            addr = r.address if use_utf8 else _ascii_address(r.address)
            cmds.append(RcptTo(addr, r.notify if dsn else (), r.orcpt if dsn else None))  # Rule 6
        chunking = ext.chunking
        pipelining = ext.pipelining
        if pipelining and not chunking:
            cmds.append(Data())
        t = peer.t
        replies: list[Reply] = []
        if pipelining:  # Rule 7
            try:
                if probe:  # Rule 16: RSET first in the group (RFC 2920 §3.1 allows it anywhere)
                    peer.send(Rset())
                for c in cmds:
                    peer.send(c)
                await peer.flush(t.mail)
                rset = await peer.reply(t.helo) if probe else None
            except HostFailure:
                if not probe:
                    raise
                raise _Stale() from None
            if rset is not None and not rset.is_positive:
                raise _Stale()
            for i in range(len(cmds)):
                timeout = t.mail if i == 0 else (t.rcpt if i <= len(msg.recipients) else t.data_init)
                replies.append(await peer.reply(timeout))
        else:
            replies.append(await peer.command(cmds[0], t.mail))
            if replies[0].is_positive:
                for c in cmds[1:]:
                    replies.append(await peer.command(c, t.rcpt))
        mail = replies[0]
        if not mail.is_positive:
            if mail.is_transient:
                raise peer.fail(mail, f"MAIL FROM refused: {mail}")
            return _all(msg, "failed", mail), False
        rcpt_replies = replies[1:1 + len(msg.recipients)]
        accepted = [i for i, rep in enumerate(rcpt_replies) if rep.is_positive]
        outcomes: list[tuple[Status, Reply]] = [(status_of(rep), rep) for rep in rcpt_replies]
        final: Reply
        if pipelining and not chunking:
            data_reply = replies[-1]
            if data_reply.code == 354 and not accepted:
                peer.conn.end_message_data()  # RFC 2920 §3.1: a 354 without recipients
                await peer.flush(t.data_block)
                await peer.reply(t.data_done)
                return tuple(outcomes), dsn
        elif not accepted:
            return tuple(outcomes), dsn
        elif chunking:
            data_reply = Reply(354, "", "BDAT")
        else:
            data_reply = await peer.command(Data(), t.data_init)
        if not accepted:
            return tuple(outcomes), dsn
        if chunking:
            final = await peer.send_bdat(body, size)
        elif data_reply.code != 354:
            final = data_reply
        else:
            await peer.send_data(body)
            final = await peer.reply(t.data_done)
        for i in accepted:
            outcomes[i] = (status_of(final), final)
        return tuple(outcomes), dsn
    finally:
        body.close()
