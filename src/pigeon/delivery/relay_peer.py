"""One connection to one mail exchanger, for ``delivery.relay_session``: connect, replies, commands.

``Peer`` wraps the sans-IO client (``proto.smtp.client``) around a ``net.connect`` connection
and turns every failure into the answer the queue needs. ``relay_session`` runs the transaction
over it; its rules (numbered there) say what is sent when.

Rules:
1. Every network or protocol failure is a ``HostFailure`` with a 451 reply naming the host:
   ``try_next`` is true until the final ``.`` (or last BDAT) has been sent, false after it
   (``relay_session`` Rule 9: the peer may have the message, RFC 1047).
2. EHLO first, HELO after a 5xx to EHLO (RFC 5321 §4.1.1.1); after STARTTLS, EHLO again
   (RFC 3207 §4.2). A failed TLS handshake is ``TlsFailed``: the caller retries in plaintext.
3. Each wait has the RFC 5321 §4.5.3.2 timeout of its step (``RelayTimeouts``).
4. AUTH PLAIN with an initial response (RFC 4616), or AUTH LOGIN when only that is offered; a
   refused login is a ``HostFailure`` that does not try the next host (the credentials are
   wrong for every host).
5. QUIT waits at most ``QUIT_TIMEOUT`` for its 221, and closing waits as long for the
   connection to end; neither raises.

What can go wrong: ``HostFailure``, ``TlsFailed``; nothing else escapes except programming errors.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from pigeon.delivery.relay_route import MxHost, literal_address
from pigeon.net.connect import ClientTlsContext, Connection, connect
from pigeon.proto.smtp.client import ClientConnection, ReplyReceived
from pigeon.proto.smtp.ehlo import Extensions
from pigeon.proto.smtp.errors import LocalProtocolError, RemoteProtocolError
from pigeon.proto.smtp.events import (
    Auth,
    AuthResponse,
    Command,
    ConnectionClosed,
    Ehlo,
    Helo,
    Quit,
    StartTls,
)
from pigeon.proto.smtp.reply import Reply

log = logging.getLogger("pigeon.delivery.relay_session")  # the relay's log lines keep their logger

READ_SIZE = 65536  # one socket read
BODY_CHUNK = 65536  # DATA: the body is streamed from the spool in 64 KiB pieces
BDAT_CHUNK = 1024 * 1024  # BDAT: 1 MiB per chunk, a round trip each (RFC 3030 sets no size)
QUIT_TIMEOUT = 5.0  # after the transaction we wait this long for 221, then just close

C451_CONNECT_FAILED = Reply(451, "4.4.1", "Connection failed")  # RFC 3463 X.4.1 no answer from host
C451_TIMEOUT = Reply(451, "4.4.2", "Timeout")  # RFC 3463 X.4.2 bad connection
C451_CONNECTION_LOST = Reply(451, "4.4.2", "Connection lost")
C451_PROTOCOL = Reply(451, "4.5.0", "Protocol error from the remote server")  # X.5.0
C451_TLS_REQUIRED = Reply(451, "4.7.5", "TLS required but not available")  # RFC 3463 X.7.5 crypto failure
C451_AUTH_FAILED = Reply(451, "4.7.0", "Login to the relay host failed")  # X.7.0 security, temporary


@dataclass(frozen=True, slots=True)
class RelayTimeouts:
    """Seconds; RFC 5321 §4.5.3.2 gives the minimums a client SHOULD wait."""

    connect: float = 30.0  # not in RFC 5321; Postfix smtp_connect_timeout = 30s
    greeting: float = 300.0  # §4.5.3.2.1 initial 220 message: 5 minutes
    helo: float = 300.0  # EHLO/HELO/STARTTLS (Postfix smtp_helo_timeout = 300s)
    mail: float = 300.0  # §4.5.3.2.2 MAIL: 5 minutes
    rcpt: float = 300.0  # §4.5.3.2.3 RCPT: 5 minutes
    data_init: float = 120.0  # §4.5.3.2.4 DATA initiation: 2 minutes
    data_block: float = 180.0  # §4.5.3.2.5 data block: 3 minutes per write
    data_done: float = 600.0  # §4.5.3.2.6 DATA termination: 10 minutes


@dataclass(frozen=True, slots=True)
class SessionSettings:
    helo_name: str
    timeouts: RelayTimeouts = RelayTimeouts()
    tls: ClientTlsContext | None = None  # None: never STARTTLS
    require_tls: bool = False  # Rule 11: no TLS, no mail (the smarthost)
    login: tuple[str, str] | None = field(default=None, repr=False)  # Rule 12: (user, password)
    peer_check: Callable[[list[bytes]], str | None] | None = None  # Rule 14 (hashable: a cache key)


class HostFailure(Exception):
    def __init__(self, reply: Reply, try_next: bool, tls_result: str | None = None) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.try_next = try_next
        self.tls_result = tls_result  # Rule 14


class TlsFailed(Exception):
    """The TLS handshake failed: retry this address without STARTTLS (Rule 2)."""


class Peer:
    def __init__(self, host: MxHost, address: str, settings: SessionSettings) -> None:
        self.host = host
        self.address = address
        self.settings = settings
        self.t = settings.timeouts
        self.conn = ClientConnection()
        self.link: Connection | None = None  # the TCP connection (net.connect)
        self.final_sent = False  # Rule 9

    def fail(self, reply: Reply, text: str, try_next: bool | None = None) -> HostFailure:
        return HostFailure(reply.with_text(f"{self.host.label(self.address)}: {text}"),
                           try_next=not self.final_sent if try_next is None else try_next)

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(self.t.connect):
                self.link = await connect(self.address, self.host.port)
        except TimeoutError:
            raise self.fail(C451_CONNECT_FAILED, "connection timed out") from None
        except OSError as exc:
            raise self.fail(C451_CONNECT_FAILED, f"connect failed: {exc.strerror or exc}") from None

    async def flush(self, timeout: float) -> None:
        data = self.conn.data_to_send()
        if not data or self.link is None:
            return
        try:
            self.link.write(data)
            async with asyncio.timeout(timeout):
                await self.link.drain()
        except TimeoutError:
            raise self.fail(C451_TIMEOUT, "timeout while sending") from None
        except OSError as exc:
            raise self.fail(C451_CONNECTION_LOST, f"lost connection while sending: {exc}") from None

    async def reply(self, timeout: float) -> Reply:
        if self.link is None:
            raise self.fail(C451_CONNECTION_LOST, "not connected")
        try:
            async with asyncio.timeout(timeout):
                while True:
                    ev = self.conn.next_event()
                    if isinstance(ev, ReplyReceived):
                        return ev.reply
                    if isinstance(ev, ConnectionClosed):
                        raise self.fail(C451_CONNECTION_LOST, "connection closed by the remote server")
                    self.conn.receive_data(await self.link.read(READ_SIZE))
        except TimeoutError:
            raise self.fail(C451_TIMEOUT, "timeout waiting for a reply") from None
        except RemoteProtocolError as exc:
            raise self.fail(C451_PROTOCOL, f"bad reply: {exc}") from None
        except OSError as exc:
            raise self.fail(C451_CONNECTION_LOST, f"lost connection: {exc}") from None

    def send(self, cmd: Command) -> None:
        try:
            self.conn.send_command(cmd)
        except LocalProtocolError as exc:  # the peer closed the session (a 421) meanwhile
            raise self.fail(C451_CONNECTION_LOST, f"cannot send {type(cmd).__name__}: {exc}") from None

    async def command(self, cmd: Command, timeout: float) -> Reply:
        self.send(cmd)
        await self.flush(timeout)
        return await self.reply(timeout)

    async def starttls(self, ctx: ClientTlsContext) -> bool:
        reply = await self.command(StartTls(), self.t.helo)
        if reply.code != 220:
            log.info("relay: %s: STARTTLS refused (%s); continuing without TLS",
                     self.host.label(self.address), reply)
            return False
        self.conn.start_tls()
        if self.link is None:
            raise self.fail(C451_CONNECTION_LOST, "not connected")
        name = None if literal_address(f"[{self.host.name}]") else self.host.name
        try:
            await self.link.start_tls(ctx, name, self.t.helo)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.warning("relay: %s: TLS handshake failed: %s", self.host.label(self.address), exc)
            raise TlsFailed(str(exc)) from None
        return True

    async def hello(self, use_tls: bool) -> tuple[Extensions, bool]:
        name = self.settings.helo_name
        reply = await self.command(Ehlo(name), self.t.helo)
        if reply.code == 250:
            ext = self.conn.extensions or Extensions()
            if use_tls and self.settings.tls is not None and ext.starttls and not self.conn.tls_active:
                if await self.starttls(self.settings.tls):
                    reply = await self.command(Ehlo(name), self.t.helo)  # RFC 3207 §4.2
                    if reply.code != 250:
                        raise self.fail(reply, f"EHLO after STARTTLS refused: {reply}")
                    return self.conn.extensions or Extensions(), True
            return ext, False
        if reply.code == 421 or reply.is_transient:
            raise self.fail(reply, f"EHLO refused: {reply}")
        reply = await self.command(Helo(name), self.t.helo)  # Rule 1
        if not reply.is_positive:
            raise self.fail(reply, f"HELO refused: {reply}")
        return Extensions(), False

    async def login(self, ext: Extensions, user: str, password: str) -> None:
        mechanisms = ext.auth_mechanisms
        if "PLAIN" in mechanisms or not mechanisms:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
            reply = await self.command(Auth("PLAIN", token), self.t.helo)
        elif "LOGIN" in mechanisms:
            reply = await self.command(Auth("LOGIN"), self.t.helo)
            for answer in (user, password):
                if reply.code != 334:
                    break
                reply = await self.command(AuthResponse(base64.b64encode(answer.encode()).decode()), self.t.helo)
        else:
            raise self.fail(C451_AUTH_FAILED, f"no usable AUTH mechanism offered "
                            f"({' '.join(sorted(mechanisms))})", try_next=False)
        if reply.code != 235:
            log.error("relay: %s: login as %s refused: %s", self.host.label(self.address), user, reply)
            raise self.fail(C451_AUTH_FAILED, f"login as {user} refused: {reply}", try_next=False)

    async def send_data(self, body: BinaryIO) -> None:
        while chunk := body.read(BODY_CHUNK):
            self.conn.send_message_data(chunk)
            await self.flush(self.t.data_block)
        self.conn.end_message_data()
        self.final_sent = True
        await self.flush(self.t.data_block)

    async def send_bdat(self, body: BinaryIO, size: int) -> Reply:
        sent = 0
        while True:
            chunk = body.read(BDAT_CHUNK)
            sent += len(chunk)
            last = sent >= size or not chunk
            self.conn.send_bdat(chunk, last)
            if last:
                self.final_sent = True
            await self.flush(self.t.data_block)
            reply = await self.reply(self.t.data_done if last else self.t.data_block)
            if last or not reply.is_positive:
                return reply

    async def quit(self) -> None:
        if self.link is None:
            return
        try:
            if not self.conn.closed:
                self.conn.send_command(Quit())
                self.link.write(self.conn.data_to_send())
                async with asyncio.timeout(QUIT_TIMEOUT):
                    await self.link.drain()
                    await self.reply(QUIT_TIMEOUT)
        except (HostFailure, OSError, TimeoutError, LocalProtocolError) as exc:
            log.debug("relay: %s: QUIT: %s", self.host.label(self.address), exc)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()

    async def aclose(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        link.close()
        try:
            async with asyncio.timeout(QUIT_TIMEOUT):
                await link.wait_closed()
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.debug("relay: %s: close: %s", self.host.label(self.address), exc)
