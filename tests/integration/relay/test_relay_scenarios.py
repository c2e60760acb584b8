"""More of issue 3's scenarios through the whole server, against Pigeon peers and a scripted peer.

The scripted peer (``tests/unit/relay/peer.py``, an SMTP server written independently of
Pigeon's core) runs in a thread of the test process on its own loopback address, so a test can
make it answer 4xx, drop 8BITMIME, and look at exactly what it received.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import RawClient
from tests.integration.relay.test_relay_through_queue import Net, dsn_status, net, parsed, sendmail
from tests.unit.relay.peer import Peer, Script

pytestmark = pytest.mark.integration
__all__ = ["net"]  # the fixture, shared with test_relay_through_queue

PEER_HOST = "127.0.0.7"


class ThreadedPeer:
    """The scripted peer on its own event loop in a thread; ``script`` may change between runs."""

    def __init__(self, script: Script, port: int) -> None:
        self.peer = Peer(script, host=PEER_HOST)
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> ThreadedPeer:
        self._thread.start()

        async def serve() -> None:
            self._server = await asyncio.start_server(self.peer._session, PEER_HOST, self.port)

        asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Sessions still open (a cached client connection): end them so they close their sockets.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def scripted(net: Net) -> Iterator[ThreadedPeer]:
    net.dns.zone["old.test"] = [("MX", "10 mx.old.test")]
    net.dns.zone["mx.old.test"] = [("A", PEER_HOST)]
    # No 8BITMIME, no SMTPUTF8, no CHUNKING: an old server.
    peer = ThreadedPeer(Script(extensions=("PIPELINING", "SIZE 10000000", "ENHANCEDSTATUSCODES")), net.port).start()
    try:
        yield peer
    finally:
        peer.stop()


def test_retry_after_4xx_then_success(net: Net, scripted: ThreadedPeer) -> None:
    scripted.peer.script.rcpt_replies["dan@old.test"] = "451 4.7.1 greylisted, try again later"
    net.sender.start()
    assert sendmail(net.sender, "-f", "alice@a.test", "dan@old.test",
                    message=b"From: alice@a.test\nSubject: greylisted\n\nhello\n").returncode == 0
    net.sender.wait_log(r"deferred to=<dan@old\.test> .*4\.7\.1 greylisted")
    del scripted.peer.script.rcpt_replies["dan@old.test"]  # the greylisting period is over
    net.sender.cli("queue", "flush")
    net.sender.wait_log(r"delivered to=<dan@old\.test> relay=mx\.old\.test\[127\.0\.0\.7\]")
    assert [t.rcpts for t in scripted.peer.received] == [["RCPT TO:<dan@old.test>"]]
    assert net.sender.wait_queue(lambda q: not q) == []


def test_8bit_body_converted_to_7bit_for_an_old_peer_keeps_the_content(net: Net, scripted: ThreadedPeer) -> None:
    net.sender.start()
    text = "Grüße aus Köln — ça va? 日本語\n"
    msg = ("From: alice@a.test\nSubject: 8bit\nMIME-Version: 1.0\n"
           "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + text).encode()
    assert sendmail(net.sender, "-f", "alice@a.test", "dan@old.test", message=msg).returncode == 0
    net.sender.wait_log(r"delivered to=<dan@old\.test>")
    [tx] = scripted.peer.received
    assert "BODY=8BITMIME" not in tx.mail  # the peer did not offer it (RFC 6152)
    assert max(tx.data) < 128  # 7-bit on the wire
    got = email.message_from_bytes(tx.data, policy=email.policy.default)
    assert isinstance(got, email.message.EmailMessage)
    assert got["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert got.get_content().replace("\r\n", "\n") == text  # decoded, the same text (CRLF on the wire)


def test_bcc_is_delivered_but_never_shown_across_the_relay(net: Net) -> None:
    net.sender.start()
    net.primary.add_user("carol@dest.test")
    net.primary.start()
    msg = (b"From: alice@a.test\nTo: bob@dest.test\nBcc: carol@dest.test\nSubject: quiet copy\n\nhi\n")
    assert sendmail(net.sender, "-t", message=msg).returncode == 0
    for user in ("bob@dest.test", "carol@dest.test"):
        [raw] = net.primary.wait_messages(user, 1)
        m = parsed(raw)
        assert m["Subject"] == "quiet copy" and m["Bcc"] is None
    [bobs] = net.primary.messages("bob@dest.test")
    assert b"carol" not in bobs  # nothing in bob's copy reveals the blind copy
    # One envelope for the domain: one transaction carried both recipients.
    assert len(net.sender.mail_events("delivered")) == 2
    assert len(net.primary.mail_events("received")) == 1


def test_dsn_from_a_relay_reaches_the_sender_on_another_instance(net: Net) -> None:
    """alice@a.test → backup MX (holds, passes on) → primary refuses the user → the backup's
    DSN travels back by MX to alice's own server."""
    net.sender.start()
    net.primary.start()
    net.backup.start()
    with RawClient(net.backup.host, net.backup.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<alice@a.test>")[0] == 250
        assert c.cmd("RCPT TO:<nobody@dest.test>")[0] == 250  # the backup cannot know the users
        assert c.data(b"Subject: lost letter\r\nMessage-ID: <lost-1@a.test>\r\n\r\nx\r\n")[0] == 250
    got = net.sender.wait_messages("alice@a.test", 1, timeout=20)
    assert len(got) == 1
    dsn = parsed(got[0])
    assert dsn.get_content_type() == "multipart/report"
    assert dsn_status(got[0]) == ["5.1.1"]
    text = got[0].decode(errors="replace")
    assert "nobody@dest.test" in text and "lost-1@a.test" in text
    assert "mx1.dest.test" in text  # the remote server's reply is quoted with its name


def test_self_in_mx_list_with_nothing_better_is_a_loop(net: Net, tmp_path: Path) -> None:
    net.dns.zone["loop.test"] = [("MX", "10 mx.a.test")]
    net.dns.zone["mx.a.test"] = [("A", "127.0.0.5")]
    net.sender.start()
    assert sendmail(net.sender, "-f", "alice@a.test", "x@loop.test",
                    message=b"Subject: loop\n\nx\n").returncode == 0
    got = net.sender.wait_messages("alice@a.test", 1)
    assert len(got) == 1 and dsn_status(got[0]) == ["5.4.6"]  # RFC 5321 §5.1
