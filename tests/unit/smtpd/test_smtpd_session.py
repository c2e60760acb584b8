"""smtpd.session.SmtpSession at unit level: the policy around the SMTP core, run by the session
driver over a real loopback listener, with the real cleanup Intake on a queue in tmp_path.

What the integration tests do with the whole server (smtplib, swaks), these do with one session
and nothing else: recipient policy (rule 2), the 250 only after the commit (rule 3), the error
limit and the replies due before any end (rule 4), bare newlines (rule 5), STARTTLS and AUTH
(rule 6), and the driver's timeouts and shutdown as SMTP says them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import os
import shutil
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from pigeon.auth.sasl import Authenticator
from pigeon.auth.throttle import AuthThrottle, ThrottleSettings
from pigeon.cleanup.intake import Intake, Transaction
from pigeon.clocks import FakeClock, SystemClock
from pigeon.config import Config, Limits
from pigeon.config.model import AuthConfig, SmtpConfig
from pigeon.core.address import Address
from pigeon.core.envelope import Envelope
from pigeon.net.listener import ConnectionLimits, Listener, Stream
from pigeon.net.tls import TlsManager, ensure_self_signed
from pigeon.queue.record import QueueRecord
from pigeon.queue.store import QueueStore
from pigeon.smtpd.session import SmtpContext, SmtpSession

HOST = "mx.example.test"
MESSAGE = b"From: a@example.org\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nHello Bob\r\n"


class Directory:
    """Recipient policy: example.test is local with one user, bob."""

    def is_local_domain(self, domain: str) -> bool:
        return domain == "example.test"

    def accepts(self, address: Address) -> bool:
        return address.key == "bob@example.test"


class Final:
    """The intake's expander: every address is final (no aliases)."""

    def expand(self, address: Address) -> list[Address]:
        return [address]


class FailingIntake(Intake):
    """The real intake, with a queue that fails at the commit (a full disk)."""

    def begin(self, envelope: Envelope, add_missing_headers: bool | None = None) -> Transaction:
        txn = super().begin(envelope, add_missing_headers=add_missing_headers)

        async def commit() -> QueueRecord:
            txn.abort()
            raise OSError(errno.ENOSPC, "No space left on device")

        txn.commit = commit  # type: ignore[method-assign]
        return txn


class Verifier:
    def verify_password(self, address: str, password: str) -> bool:
        return (address, password) == ("bob@example.test", "secret")


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[QueueStore]:
    q = QueueStore(tmp_path / "queue", FakeClock())
    yield q
    q.close()


class Server:
    """One SMTP listener in the test's event loop; ``queued`` collects what was committed."""

    def __init__(self, tmp: Path, queue: QueueStore, *, intake: type[Intake] = Intake, timeout: float = 30.0,
                 line_timeout: float | None = None, tls: bool = False, auth: bool = False, **limits: object) -> None:
        self.config = Config(hostname=HOST, data_dir=tmp, domains=("example.test",),
                             relay_domains=("backup.example",),
                             limits=dataclasses.replace(Limits(), **limits),  # type: ignore[arg-type]
                             auth=AuthConfig(allow_plaintext_on_loopback=True))
        self.queued: list[QueueRecord] = []
        self.tls = TlsManager(ensure_self_signed("localhost", tmp / "tls")) if tls else None
        authenticator = None
        if auth:
            clock = SystemClock()
            authenticator = Authenticator(Verifier(), AuthThrottle(ThrottleSettings(failure_delay=0.0), clock), clock)
        self.ctx = SmtpContext(lambda: self.config, Directory(), intake(queue, Final(), HOST, FakeClock()),
                               self.queued.append, tls=self.tls, authenticator=authenticator)
        self.sessions: list[SmtpSession] = []
        self.limits = ConnectionLimits(10, 10, timeout, line_timeout)
        self.listener = Listener("smtp", [("127.0.0.1", 0)], self._session, lambda: self.limits, b"421 busy\r\n")

    def _session(self, stream: Stream) -> SmtpSession:
        session = SmtpSession(stream, self.ctx)
        self.sessions.append(session)
        return session

    async def connect(self) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.listener.bound[0][1])
        client = Client(reader, writer)
        assert (await client.reply()).startswith(b"220 mx.example.test ESMTP Pigeon")
        return client


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self) -> bytes:
        """One reply, all its lines."""
        out = b""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            if not line:
                return out
            out += line
            if line[3:4] != b"-":
                return out

    async def cmd(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def rest(self) -> bytes:
        """Everything until the server closes."""
        return await asyncio.wait_for(self.reader.read(), 5)

    async def transaction(self, rcpt: bytes = b"bob@example.test", body: bytes = MESSAGE) -> bytes:
        assert (await self.cmd(b"MAIL FROM:<a@example.org>")).startswith(b"250 ")
        assert (await self.cmd(b"RCPT TO:<" + rcpt + b">")).startswith(b"250 ")
        assert (await self.cmd(b"DATA")).startswith(b"354 ")
        self.writer.write(body + b".\r\n")
        return await self.reply()

    def close(self) -> None:
        self.writer.close()


def serve(tmp: Path, queue: QueueStore, body: Callable[[Server], Awaitable[None]], **kw: object) -> Server:
    async def main() -> Server:
        server = Server(tmp, queue, **kw)  # type: ignore[arg-type]
        await server.listener.start()
        try:
            await asyncio.wait_for(body(server), 20)
        finally:
            await server.listener.stop(grace=2.0)
        return server

    return asyncio.run(main())


# -- a transaction; rules 2 and 3 ------------------------------------------------------------------

def test_a_message_is_queued_and_acknowledged_with_its_queue_id(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        ehlo = await c.cmd(b"EHLO client.example.org")
        assert ehlo.startswith(b"250-mx.example.test")
        assert b"PIPELINING" in ehlo and b"CHUNKING" in ehlo and b"STARTTLS" not in ehlo and b"AUTH" not in ehlo
        reply = await c.transaction()
        assert len(srv.queued) == 1  # committed before the 250 was written
        assert reply == b"250 2.0.0 Ok: queued as %s\r\n" % str(srv.queued[0].id).encode()
        assert await c.cmd(b"QUIT") == b"221 2.0.0 mx.example.test closing connection\r\n"
        assert await c.rest() == b""
        c.close()

    srv = serve(tmp_path, queue, body)
    [record] = srv.queued
    assert [str(r.address) for r in record.envelope.recipients] == ["bob@example.test"]
    assert record.envelope.client.helo == "client.example.org"
    stored = queue.body_path(record.id).read_bytes()
    assert stored.startswith(b"Received: from client.example.org") and stored.endswith(MESSAGE)
    assert srv.sessions[0].commands == 6 and srv.sessions[0].errors == 0


@pytest.mark.parametrize(("rcpt", "reply"), [
    (b"bob@example.test", b"250 2.1.5 Recipient OK\r\n"),
    (b"Postmaster@example.test", b"250 2.1.5 Recipient OK\r\n"),  # RFC 5321 §4.5.1
    (b"someone@backup.example", b"250 2.1.5 Recipient OK\r\n"),  # a relay domain
    (b"nobody@example.test", b"550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n"),
    (b"alice@elsewhere.example", b"554 5.7.1 <alice@elsewhere.example>: Relay access denied\r\n"),
])
def test_recipient_policy_on_port_25(tmp_path: Path, queue: QueueStore, rcpt: bytes, reply: bytes) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"HELO client.example.org")
        assert (await c.cmd(b"MAIL FROM:<a@example.org>")).startswith(b"250 ")
        assert await c.cmd(b"RCPT TO:<" + rcpt + b">") == reply
        c.close()

    serve(tmp_path, queue, body)


def test_past_max_recipients_the_client_is_told_to_send_the_rest_later(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"EHLO client.example.org")
        await c.cmd(b"MAIL FROM:<a@example.org>")
        assert (await c.cmd(b"RCPT TO:<bob@example.test>")).startswith(b"250 ")
        assert (await c.cmd(b"RCPT TO:<postmaster@example.test>")).startswith(b"250 ")
        assert (await c.cmd(b"RCPT TO:<x@backup.example>")).startswith(b"452 4.5.3 ")  # RFC 5321 §4.5.3.1.8
        c.close()

    serve(tmp_path, queue, body, max_recipients=2)


def test_a_failed_queue_write_is_452_never_250(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"EHLO client.example.org")
        assert (await c.transaction()).startswith(b"452 4.3.1 ")
        assert (await c.cmd(b"NOOP")).startswith(b"250 ")  # the session goes on
        c.close()

    srv = serve(tmp_path, queue, body, intake=FailingIntake)
    assert srv.queued == []


def test_a_bare_lf_in_data_is_refused(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"EHLO client.example.org")
        assert (await c.transaction(body=b"Subject: x\r\n\r\nbare\nlf\r\n")).startswith(b"550 5.5.2 ")
        c.close()

    srv = serve(tmp_path, queue, body)
    assert srv.queued == [] and os.listdir(queue.root / "msg") == []  # rule 5; nothing left behind


def test_a_transaction_cut_off_in_the_middle_leaves_nothing(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"EHLO client.example.org")
        await c.cmd(b"MAIL FROM:<a@example.org>")
        await c.cmd(b"RCPT TO:<bob@example.test>")
        await c.cmd(b"DATA")
        c.writer.write(MESSAGE)  # no end of data: the client goes away
        c.writer.write_eof()
        assert await c.rest() == b""
        c.close()

    srv = serve(tmp_path, queue, body)
    assert srv.queued == [] and os.listdir(queue.root / "msg") == [] and os.listdir(queue.root / "tmp") == []


def test_bdat_chunks(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"EHLO client.example.org")
        await c.cmd(b"MAIL FROM:<a@example.org>")
        await c.cmd(b"RCPT TO:<bob@example.test>")
        half = len(MESSAGE) // 2
        c.writer.write(b"BDAT %d\r\n" % half + MESSAGE[:half])
        assert await c.reply() == b"250 2.0.0 Chunk received\r\n"
        c.writer.write(b"BDAT %d LAST\r\n" % (len(MESSAGE) - half) + MESSAGE[half:])
        reply = await c.reply()
        assert reply.startswith(b"250 2.0.0 Ok: queued as ")
        c.close()

    srv = serve(tmp_path, queue, body)
    assert queue.body_path(srv.queued[0].id).read_bytes().endswith(MESSAGE)


# -- rule 4: the error limit, and every reply due before the end -------------------------------------

def test_too_many_errors_end_the_session_after_the_replies_due(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        c.writer.write(b"EHLO client.example.org\r\nBOGUS 1\r\nBOGUS 2\r\nBOGUS 3\r\nNOOP\r\n")
        replies = (await c.rest()).split(b"\r\n")
        assert replies[-4:] == [b"500 5.5.2 Command not recognized"] * 2 + [
            b"421 4.7.0 Too many errors, closing channel", b""]
        c.close()

    srv = serve(tmp_path, queue, body, max_errors=3)
    assert srv.sessions[0].errors == 3


def test_a_committed_message_is_acknowledged_before_a_fatal_line_closes(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        c.writer.write(b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\n"
                       b"DATA\r\n" + MESSAGE + b".\r\nGET / HTTP/1.1\r\nNOOP\r\n")
        replies = await c.rest()
        assert b"250 2.0.0 Ok: queued as %s\r\n" % str(srv.queued[0].id).encode() in replies
        assert replies.endswith(b"421 4.7.0 This is an SMTP server, not a web proxy; closing channel\r\n")
        c.close()

    serve(tmp_path, queue, body)


def test_pipelined_replies_leave_in_one_write(tmp_path: Path, queue: QueueStore) -> None:
    """RFC 2920: the driver writes when the input runs dry, so a pipelined transaction's replies
    share one segment (counted at the stream)."""

    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"EHLO client.example.org")
        stream = srv.sessions[0].stream
        writes: list[bytes] = []
        real_write = stream.write

        async def write(data: bytes) -> None:
            writes.append(data)
            await real_write(data)

        stream.write = write  # type: ignore[method-assign]
        c.writer.write(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<nobody@example.test>\r\n"
                       b"NOOP\r\n")
        for _ in range(4):
            await c.reply()
        assert writes == [b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
                          b"550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown\r\n"
                          b"250 2.0.0 OK\r\n"]
        c.close()

    serve(tmp_path, queue, body)


# -- the driver's endings, as SMTP says them ---------------------------------------------------------

def test_an_idle_client_gets_421_timeout(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        assert await c.rest() == b"421 4.4.2 mx.example.test Timeout, closing channel\r\n"
        c.close()

    serve(tmp_path, queue, body, timeout=0.3)


def test_a_line_that_never_ends_gets_421_timeout(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(7):  # "NNNNNNN", one octet every 0.1 s, then silence: the line deadline
            c.writer.write(b"N")  # (0.8 s) ends it before the idle timeout would (1.2 s)
            await asyncio.sleep(0.1)
        assert await c.rest() == b"421 4.4.2 mx.example.test Timeout, closing channel\r\n"
        assert loop.time() - t0 < 1.1
        c.close()

    serve(tmp_path, queue, body, timeout=0.6, line_timeout=0.8)


def test_shutdown_says_421_and_aborts_the_open_transaction(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        await c.cmd(b"EHLO client.example.org")
        await c.cmd(b"MAIL FROM:<a@example.org>")
        await c.cmd(b"RCPT TO:<bob@example.test>")
        await c.cmd(b"DATA")
        c.writer.write(MESSAGE)  # half a transaction, then the server stops
        await asyncio.sleep(0.1)
        await srv.listener.stop(grace=2.0)
        assert await c.rest() == b"421 4.3.2 mx.example.test Service shutting down, closing channel\r\n"
        c.close()

    srv = serve(tmp_path, queue, body)
    assert srv.queued == [] and os.listdir(queue.root / "msg") == [] and os.listdir(queue.root / "tmp") == []


# -- rule 6: STARTTLS and AUTH --------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@needs_openssl
def test_starttls_forgets_the_session_and_what_was_pipelined(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        assert b"STARTTLS" in await c.cmd(b"EHLO client.example.org")
        c.writer.write(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        assert await c.reply() == b"220 2.0.0 Ready to start TLS\r\n"
        await c.writer.start_tls(client_tls())
        assert (await c.cmd(b"MAIL FROM:<a@example.org>")).startswith(b"503 ")  # EHLO first, again
        ehlo = await c.cmd(b"EHLO client.example.org")
        assert b"STARTTLS" not in ehlo
        assert (await c.transaction()).startswith(b"250 2.0.0 Ok: queued as ")
        c.close()

    srv = serve(tmp_path, queue, body, tls=True)
    [record] = srv.queued
    assert record.envelope.sender == Address("a", "example.org")
    assert record.envelope.client.protocol == "ESMTPS" and record.envelope.client.tls


def test_auth_plain_lets_the_user_relay(tmp_path: Path, queue: QueueStore) -> None:
    async def body(srv: Server) -> None:
        c = await srv.connect()
        assert b"AUTH PLAIN LOGIN" in await c.cmd(b"EHLO client.example.org")  # loopback allowed in clear
        assert (await c.cmd(b"AUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAd3Jvbmc=")).startswith(b"535 5.7.8 ")
        assert await c.cmd(b"AUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0") == b"235 2.7.0 Authentication successful\r\n"
        assert (await c.transaction(rcpt=b"alice@elsewhere.example")).startswith(b"250 2.0.0 Ok: queued as ")
        c.close()

    srv = serve(tmp_path, queue, body, auth=True)
    assert srv.queued[0].envelope.client.authenticated_as == "bob@example.test"
    assert srv.queued[0].envelope.client.protocol == "ESMTPA"


class ScriptStream:
    """A stream that plays a client's side from a list and keeps what the session writes."""

    peer_ip, tls_active, tls_info, timeout = "192.0.2.9", False, None, 300.0

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.written = bytearray()

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, data: bytes) -> None:
        self.written += data

    def write_nowait(self, data: bytes) -> None:
        self.written += data


def test_a_finished_session_is_freed_at_once(tmp_path: Path, queue: QueueStore) -> None:
    """No reference cycle through the driver (net.driver rule 10): a session, with its stream,
    buffers and transaction, is freed when it ends, not at the next run of the cyclic GC (which
    showed as CPU per message)."""
    srv = Server(tmp_path, queue)
    stream = ScriptStream([b"EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\n",
                           b"RCPT TO:<bob@example.test>\r\nDATA\r\n", MESSAGE + b".\r\nQUIT\r\n"])
    gc.disable()
    try:
        session = SmtpSession(stream, srv.ctx)  # type: ignore[arg-type]
        asyncio.run(session.run())
        gone = weakref.ref(session)
        del session
        assert gone() is None
    finally:
        gc.enable()
    assert stream.written.startswith(b"220 ") and stream.written.endswith(b"221 2.0.0 mx.example.test closing connection\r\n")
    assert len(srv.queued) == 1
