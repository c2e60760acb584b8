"""The Bouncer (pigeon.bounce.dsn) with the real QueueStore and cleanup Intake in tmp_path."""

from __future__ import annotations

import asyncio
import email
import email.policy
import errno
import logging
import os
import tracemalloc
from collections.abc import Iterator
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from pigeon.bounce.dsn import Bouncer
from pigeon.cleanup.intake import Intake
from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import TemporaryError
from pigeon.durable.testing import FaultyIO
from pigeon.queue.record import Attempt, QueueRecord, RcptState
from pigeon.queue.store import QueueStore

HOST = "mx.example.net"
ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
CAROL = Address("carol", "example.net")
POSTMASTER = Address("postmaster", "example.net")
BODY = b"Subject: lunch\r\nMessage-ID: <m1@example.org>\r\n\r\nSee you at noon.\r\n"
MX = "mx.example.net[192.0.2.1]:25"


class Identity:
    def expand(self, address: Address) -> list[Address]:
        return [address]


class Env:
    """A real queue and intake in a temporary directory, and helpers to make originals."""

    def __init__(self, root: Path) -> None:
        self.clock = FakeClock()
        self.fio = FaultyIO()  # the queue's IO seam: a test sets faults on it
        self.queue = QueueStore(root / "queue", self.clock, io=self.fio)
        self.intake = Intake(self.queue, Identity(), HOST, self.clock)
        self.postmaster: Address | None = POSTMASTER
        self.handed: list[QueueRecord] = []
        self.bouncer = Bouncer(self.intake, self.queue, HOST, lambda: self.postmaster, self.clock,
                               max_lifetime=5 * 86400.0, on_queued=self.handed.append)

    def original(self, *rcpts: Recipient, sender: Address | None = ALICE, body: bytes = BODY,
                 client: ClientInfo | None = None, **env: object) -> QueueRecord:
        envelope = Envelope(sender, client=client or ClientInfo("192.0.2.7", "mail.example.org"),
                            **env)  # type: ignore[arg-type]
        txn = self.intake.begin(envelope)
        for r in rcpts or (Recipient(BOB),):
            txn.add_rcpt(r)
        for i in range(0, len(body), 65536):
            txn.write(body[i : i + 65536])
        return asyncio.run(txn.commit())

    def notices(self, original: QueueRecord) -> list[QueueRecord]:
        return [r for r in self.queue.scan(("active",)) if r.id != original.id]

    def notice_bytes(self, record: QueueRecord) -> bytes:
        return self.queue.body_path(record.id).read_bytes()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.queue.close()


def fail(rcpt: RcptState, reply: str = "550 5.1.1 <bob@example.net>: User unknown",
         host: str = MX, when: float = 1_800_000_100.0) -> RcptState:
    rcpt.status = "failed"
    rcpt.attempts.append(Attempt(when, host, reply))
    rcpt.last_reply = reply
    return rcpt


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> list[EmailMessage]:
    out = list(msg.iter_parts())
    assert all(isinstance(p, EmailMessage) for p in out)
    return out  # type: ignore[return-value]


def status_blocks(msg: EmailMessage) -> list[Message]:
    blocks = parts(msg)[1].get_payload()
    assert isinstance(blocks, list)
    return [b for b in blocks if isinstance(b, Message)]


def test_failure_notice_to_sender(env: Env) -> None:
    rec = env.original(Recipient(BOB, orcpt="rfc822;Bob@Example.net"), Recipient(CAROL), envid="ENV-1")
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    assert notice.envelope.sender is None  # RFC 5321 §4.5.5
    assert [r.address for r in notice.rcpts] == [ALICE]
    assert env.handed == [notice]  # handed to the queue manager for delivery now
    data = env.notice_bytes(notice)
    assert data.startswith(b"Received: by mx.example.net (Pigeon) id " + notice.id.encode())
    msg = parse(data)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    assert msg["To"] == "alice@example.org"  # "<alice@example.org>" on the wire
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<m1@example.org>"
    assert msg["Date"] is not None and msg["Message-ID"].endswith(f"@{HOST}>")
    assert msg.get_content_type() == "multipart/report"
    p = parts(msg)
    assert [x.get_content_type() for x in p] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert "User unknown" in p[0].get_content() and "carol" not in p[0].get_content()
    per_msg, per_rcpt = status_blocks(msg)
    assert per_msg["Reporting-MTA"] == "dns; mx.example.net"
    assert per_msg["Original-Envelope-Id"] == "ENV-1"
    assert per_msg["Arrival-Date"] is not None
    assert per_rcpt["Original-Recipient"] == "rfc822; Bob@Example.net"
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.net>: User unknown"
    assert per_rcpt["Last-Attempt-Date"] is not None
    # RET not given: the header section only, without the body
    returned = p[2].get_payload(decode=True)
    assert isinstance(returned, bytes)
    assert b"Subject: lunch\r\n" in returned and b"See you at noon" not in returned
    assert returned.startswith(b"Received: from mail.example.org ([192.0.2.7])")


def test_one_notice_for_several_failed_recipients(env: Env) -> None:
    rec = env.original(Recipient(BOB), Recipient(CAROL))
    asyncio.run(env.bouncer.bounce(rec, [fail(r) for r in rec.rcpts]))
    [notice] = env.notices(rec)
    finals = [b["Final-Recipient"] for b in status_blocks(parse(env.notice_bytes(notice)))[1:]]
    assert finals == ["rfc822; bob@example.net", "rfc822; carol@example.net"]


def test_notify_never_produces_nothing(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    rec = env.original(Recipient(BOB, notify=("NEVER",)))
    with caplog.at_level(logging.INFO, logger="pigeon.bounce.dsn"):
        asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
        asyncio.run(env.bouncer.delay_warning(rec, rec.rcpts))
    assert env.notices(rec) == [] and env.handed == []
    assert "NOTIFY excludes it" in caplog.text


def test_notify_lists_are_per_recipient(env: Env) -> None:
    rec = env.original(Recipient(BOB, notify=("SUCCESS",)), Recipient(CAROL, notify=("FAILURE",)))
    asyncio.run(env.bouncer.bounce(rec, [fail(r) for r in rec.rcpts]))
    [notice] = env.notices(rec)
    blocks = status_blocks(parse(env.notice_bytes(notice)))
    assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; carol@example.net"]


def test_delay_warning(env: Env) -> None:
    rec = env.original()
    r = rec.rcpts[0]
    r.status = "deferred"
    r.attempts.append(Attempt(rec.created + 3600, MX, "451 4.7.1 Greylisted, try later"))
    r.last_reply = "451 4.7.1 Greylisted, try later"
    asyncio.run(env.bouncer.delay_warning(rec, [r]))
    [notice] = env.notices(rec)
    msg = parse(env.notice_bytes(notice))
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    block = status_blocks(msg)[1]
    assert block["Action"] == "delayed" and block["Status"] == "4.7.1"
    assert block["Will-Retry-Until"] is not None
    until = email.utils.parsedate_to_datetime(block["Will-Retry-Until"]).timestamp()
    assert until == rec.created + 5 * 86400
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"


def test_success_notices(env: Env) -> None:
    rec = env.original(Recipient(BOB, notify=("SUCCESS",)), Recipient(CAROL))
    for r in rec.rcpts:
        r.status = "delivered"
        r.last_reply = "250 2.0.0 Ok: queued as 4F1"
    asyncio.run(env.bouncer.success(rec, rec.rcpts, "relayed"))
    [notice] = env.notices(rec)  # carol did not ask for SUCCESS
    msg = parse(env.notice_bytes(notice))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    [block] = status_blocks(msg)[1:]
    assert block["Action"] == "relayed" and block["Status"] == "2.0.0"
    with pytest.raises(ValueError):
        asyncio.run(env.bouncer.success(rec, rec.rcpts, "expanded"))


def test_null_sender_goes_to_postmaster_marked(env: Env) -> None:
    rec = env.original(sender=None)
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    assert notice.envelope.sender is None
    assert [r.address for r in notice.rcpts] == [POSTMASTER]
    msg = parse(env.notice_bytes(notice))
    assert msg["X-Pigeon-Double-Bounce"] == "yes"
    assert msg["To"] == "postmaster@example.net"
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"


def test_failed_postmaster_notice_is_only_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    rec = env.original(sender=None)
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [double] = env.notices(rec)
    env.queue.remove(rec.id)
    with caplog.at_level(logging.ERROR, logger="pigeon.bounce.dsn"):
        asyncio.run(env.bouncer.bounce(double, [fail(double.rcpts[0], "550 5.1.1 no postmaster")]))
    assert [r.id for r in env.queue.scan(("active",))] == [double.id]  # nothing new: no loop
    assert "not bounced again" in caplog.text


def test_forged_mark_from_outside_still_reaches_postmaster(env: Env) -> None:
    body = b"X-Pigeon-Double-Bounce: yes\r\nSubject: bounce\r\n\r\nx\r\n"
    rec = env.original(sender=None, body=body)  # received over SMTP, not queued by us
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    assert [r.rcpts[0].address for r in env.notices(rec)] == [POSTMASTER]


def test_null_sender_without_postmaster_is_dropped(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.postmaster = None
    rec = env.original(sender=None)
    with caplog.at_level(logging.ERROR, logger="pigeon.bounce.dsn"):
        asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    assert env.notices(rec) == []
    assert "no postmaster" in caplog.text


def test_null_sender_delay_is_not_reported(env: Env) -> None:
    rec = env.original(sender=None)
    asyncio.run(env.bouncer.delay_warning(rec, rec.rcpts))
    assert env.notices(rec) == []


def test_ret_full_returns_whole_message(env: Env) -> None:
    rec = env.original(ret="FULL")
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    part = parts(parse(env.notice_bytes(notice)))[2]
    assert part.get_content_type() == "message/rfc822"
    inner = part.get_content()
    assert inner["Subject"] == "lunch"
    assert inner.get_content().rstrip("\r\n") == "See you at noon."


def test_ret_hdrs_returns_headers(env: Env) -> None:
    rec = env.original(ret="HDRS")
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    assert parts(parse(env.notice_bytes(notice)))[2].get_content_type() == "text/rfc822-headers"


def test_ret_full_over_the_cap_returns_headers(env: Env) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 3000  # ~3 MB
    rec = env.original(ret="FULL", body=big)
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    assert notice.size < 20_000  # the notice does not carry the 3 MB
    msg = parse(env.notice_bytes(notice))
    assert parts(msg)[2].get_content_type() == "text/rfc822-headers"
    assert f"larger than {env.bouncer.max_returned_body} bytes" in parts(msg)[0].get_content()


def test_large_original_is_streamed_not_held(env: Env) -> None:
    env.bouncer.max_returned_body = 64 * 1024 * 1024
    line = b"y" * 998 + b"\r\n"
    big = b"Subject: huge\r\n\r\n" + line * 20_000  # 20 MB
    rec = env.original(ret="FULL", body=big)
    tracemalloc.start()
    try:
        asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # a few chunks, never the 20 MB message
    [notice] = env.notices(rec)
    assert notice.size > len(big)
    with env.queue.open_body(notice.id) as f:
        data = f.read()
    assert data.count(line) == 20_000
    assert parts(parse(data))[2].get_content_type() == "message/rfc822"


def test_bare_lf_original_is_returned_with_crlf(env: Env) -> None:
    rec = env.original(ret="FULL", body=b"Subject: lf\n\nline one\nline two\n",
                       client=ClientInfo("local", "", "local"))
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    data = env.notice_bytes(notice)
    assert b"\r\nline one\r\nline two\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_smtputf8_original_gets_global_types(env: Env) -> None:
    user = Address("用户", "例子.广告")
    sender = Address("发件人", "例子.广告")
    body = "Subject: 你好\r\n\r\n正文\r\n".encode()
    rec = env.original(Recipient(user), sender=sender, body=body, smtputf8=True, ret="FULL")
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    assert notice.envelope.smtputf8 and notice.envelope.body == "8BITMIME"
    data = env.notice_bytes(notice)
    assert b"Content-Type: message/global-delivery-status\r\n" in data
    assert b"Content-Type: message/global\r\n" in data
    assert "Final-Recipient: utf-8; 用户@例子.广告\r\n".encode() in data
    assert "To: <发件人@例子.广告>\r\n".encode() in data


def test_notify_postmaster_copy(env: Env) -> None:
    env.bouncer.notify_postmaster = True
    rec = env.original(ret="FULL")
    asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    notices = env.notices(rec)
    by_rcpt = {n.rcpts[0].address: n for n in notices}
    assert set(by_rcpt) == {ALICE, POSTMASTER}
    copy = parse(env.notice_bytes(by_rcpt[POSTMASTER]))
    assert copy["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert copy["X-Pigeon-Double-Bounce"] == "yes"
    assert parts(copy)[2].get_content_type() == "text/rfc822-headers"  # headers only
    assert parts(parse(env.notice_bytes(by_rcpt[ALICE])))[2].get_content_type() == "message/rfc822"


def test_missing_body_still_notifies(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    rec = env.original()
    os.unlink(env.queue.body_path(rec.id))
    with caplog.at_level(logging.WARNING, logger="pigeon.bounce.dsn"):
        asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    [notice] = env.notices(rec)
    assert [p.get_content_type() for p in parts(parse(env.notice_bytes(notice)))] == [
        "text/plain", "message/delivery-status"]
    assert "cannot read the original" in caplog.text


def test_queue_failure_propagates_and_leaves_nothing(env: Env) -> None:
    rec = env.original()
    env.fio.fail("fsync", error=errno.ENOSPC, times=None)
    with pytest.raises(TemporaryError):
        asyncio.run(env.bouncer.bounce(rec, [fail(rec.rcpts[0])]))
    env.fio.clear()
    assert env.notices(rec) == [] and env.handed == []
    assert sorted(os.listdir(env.queue.root / "msg")) == [rec.id]
