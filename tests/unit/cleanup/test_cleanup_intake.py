"""Cleanup intake (pigeon.cleanup.intake) writing into a real queue directory."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.cleanup.intake import Intake, Transaction
from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import PermanentError, TemporaryError
from pigeon.durable.testing import FaultyIO
from pigeon.proto.smtp.reply import C452_INSUFFICIENT_STORAGE, C554_LOOP, C554_NO_VALID_RECIPIENTS
from pigeon.queue.record import QueueRecord
from pigeon.queue.store import QueueStore

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
CAROL = Address("carol", "example.net")
TEAM = Address("team", "example.net")
LOOPY = Address("loopy", "example.net")


class Aliases:
    """The directory seam: a table of aliases; anything else is final."""

    def __init__(self) -> None:
        self.table = {
            "team@example.net": [BOB, CAROL, Address("dave", "elsewhere.example")],
            "bobby@example.net": [BOB],
            "loopy@example.net": [],
        }

    def expand(self, address: Address) -> list[Address]:
        if address.key == "broken@example.net":
            raise RuntimeError("database is locked")
        return list(self.table.get(address.key, [address]))


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[QueueStore]:
    q = QueueStore(tmp_path / "queue", FakeClock())
    yield q
    q.close()


@pytest.fixture
def intake(queue: QueueStore) -> Intake:
    return Intake(queue, Aliases(), "mx.example.net", FakeClock())


def begin(intake: Intake, *rcpts: Address, fix: bool | None = None) -> Transaction:
    env = Envelope(ALICE, [], client=ClientInfo("192.0.2.7", "mail.example.org", "ESMTP"))
    txn = intake.begin(env, add_missing_headers=fix)
    for r in rcpts:
        txn.add_rcpt(Recipient(r, ("FAILURE",), f"rfc822;{r}"))
    return txn


def body_of(queue: QueueStore, rec: QueueRecord) -> bytes:
    return queue.body_path(rec.id).read_bytes()


def nothing_queued(queue: QueueStore) -> bool:
    return all(not os.listdir(queue.root / d) for d in ("tmp", "msg", "active"))


MESSAGE = b"From: Alice <alice@example.org>\r\nSubject: hi\r\n\r\nHello\r\n"


def test_commit_prepends_received_and_queues(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB)
    txn.write(MESSAGE[:10])
    txn.write(MESSAGE[10:])
    rec = asyncio.run(txn.commit())
    data = body_of(queue, rec)
    assert data.startswith(b"Received: from mail.example.org ([192.0.2.7])\r\n\tby mx.example.net (Pigeon) with ESMTP id "
                           + rec.id.encode() + b"\r\n\tfor <bob@example.net>; ")
    assert data.endswith(b"\r\n" + MESSAGE)
    assert rec.size == len(data)
    assert queue.load(rec.id).envelope.recipients == [Recipient(BOB, ("FAILURE",), "rfc822;bob@example.net")]


def test_commit_sync(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB)
    txn.write(MESSAGE)
    rec = txn.commit_sync()
    assert queue.load(rec.id).state == "active"
    with pytest.raises(ValueError):
        txn.write(b"more")  # used once


def test_alias_expansion_deduplicates_and_keeps_first_original(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, TEAM, Address("bobby", "example.net"), BOB, CAROL)
    txn.write(MESSAGE)
    rec = txn.commit_sync()
    got = [(str(r.address), str(r.original), r.orcpt) for r in rec.rcpts]
    assert got == [
        ("bob@example.net", "team@example.net", "rfc822;team@example.net"),
        ("carol@example.net", "team@example.net", "rfc822;team@example.net"),
        ("dave@elsewhere.example", "team@example.net", "rfc822;team@example.net"),
    ]
    assert len(rec.envelope.recipients) == 4  # the envelope keeps what RCPT said
    assert b"\tfor <" not in body_of(queue, rec)  # several recipients: none named


def test_dedup_is_by_folded_key(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB, Address("BOB", "Example.NET".lower()))
    txn.write(MESSAGE)
    assert [str(r.address) for r in txn.commit_sync().rcpts] == ["bob@example.net"]


def test_expansion_to_nothing_is_a_failed_recipient(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, LOOPY, BOB)
    txn.write(MESSAGE)
    rec = txn.commit_sync()
    loopy = rec.rcpts[0]
    assert loopy.address == LOOPY and loopy.status == "failed" and loopy.last_reply.startswith("550 5.4.6")
    assert rec.rcpts[1].status == "pending"


def test_directory_failure_is_temporary(intake: Intake) -> None:
    txn = begin(intake)
    with pytest.raises(TemporaryError) as info:
        txn.add_rcpt(Recipient(Address("broken", "example.net")))
    assert info.value.reply.code == 451
    txn.abort()


def received_lines(n: int) -> bytes:
    return b"".join(b"Received: from hop%d by hop%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i + 1) for i in range(n))


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_loop_detected_with_headers_split_across_chunks(queue: QueueStore, intake: Intake, chunk: int) -> None:
    msg = received_lines(101) + b"Subject: loop\r\n\r\nbody\r\n"
    txn = begin(intake, BOB)
    for i in range(0, len(msg), chunk):
        txn.write(msg[i : i + chunk])
    with pytest.raises(PermanentError) as info:
        asyncio.run(txn.commit())
    assert info.value.reply == C554_LOOP
    assert nothing_queued(queue)


def test_exactly_max_received_is_accepted(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB)
    txn.write(received_lines(100) + b"\r\nbody\r\n")
    rec = txn.commit_sync()
    assert body_of(queue, rec).count(b"\nReceived: ") + 1 == 101  # ours + 100


def test_received_in_the_body_is_not_counted(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB)
    txn.write(b"Subject: forwarded\r\n\r\n" + received_lines(150))
    txn.commit_sync()


def test_header_section_too_big(queue: QueueStore) -> None:
    intake = Intake(queue, Aliases(), "mx.example.net", FakeClock(), max_header_bytes=1000)
    txn = begin(intake, BOB)
    for _ in range(50):
        txn.write(b"X-Filler: " + b"y" * 90 + b"\r\n")
    txn.write(b"\r\nbody\r\n")
    with pytest.raises(PermanentError) as info:
        txn.commit_sync()
    assert info.value.reply.code == 552
    assert nothing_queued(queue)


def test_missing_date_and_message_id_are_added(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB, fix=True)
    txn.write(b"From: a@example.org\r\nSub")
    txn.write(b"ject: x\r\n\r\nbody\r\n")
    rec = txn.commit_sync()
    data = body_of(queue, rec)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert rest == b"body\r\n"
    assert head.split(b"\r\n")[-2].startswith(b"Date: ")
    assert head.split(b"\r\n")[-1] == b"Message-ID: <" + rec.id.encode() + b"@mx.example.net>"
    assert b"From: a@example.org\r\nSubject: x\r\nDate: " in head


def test_present_headers_are_not_duplicated(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB, fix=True)
    msg = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMESSAGE-ID: <x@y>\r\n\r\nbody\r\n"
    txn.write(msg)
    assert body_of(queue, txn.commit_sync()).endswith(b"\r\n" + msg)


def test_fix_ups_only_when_asked(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB)
    txn.write(b"Subject: x\r\n\r\nbody\r\n")
    data = body_of(queue, txn.commit_sync())
    assert b"Message-ID:" not in data and b"\nDate:" not in data


def test_fix_ups_when_the_message_ends_inside_its_headers(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB, fix=True)
    txn.write(b"Subject: no body")
    data = body_of(queue, txn.commit_sync())
    assert b"Subject: no body\r\nDate: " in data and data.endswith(b"@mx.example.net>\r\n")


def test_fix_ups_when_headers_end_on_a_body_line(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB, fix=True)
    txn.write(b"Subject: x\r\nnot a header\r\n")
    data = body_of(queue, txn.commit_sync())
    assert data.endswith(b"@mx.example.net>\r\n\r\nnot a header\r\n")


def test_intake_default_for_fix_ups(queue: QueueStore) -> None:
    intake = Intake(queue, Aliases(), "mx.example.net", FakeClock(), add_missing_headers=True)
    txn = begin(intake, BOB)
    txn.write(b"Subject: x\r\n\r\nb\r\n")
    assert b"Message-ID: <" in body_of(queue, txn.commit_sync())


def test_no_recipients_is_refused(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake)
    txn.write(MESSAGE)
    with pytest.raises(PermanentError) as info:
        txn.commit_sync()
    assert info.value.reply == C554_NO_VALID_RECIPIENTS
    assert nothing_queued(queue)


def test_abort_removes_the_partial_body(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB)
    txn.write(MESSAGE)
    txn.abort()
    txn.abort()
    assert nothing_queued(queue)
    with pytest.raises(ValueError):
        txn.commit_sync()


def test_rcpt_after_data_is_refused(intake: Intake) -> None:
    txn = begin(intake, BOB)
    txn.write(MESSAGE)
    with pytest.raises(ValueError):
        txn.add_rcpt(Recipient(CAROL))
    txn.abort()


def test_disk_full_while_streaming_is_452_at_commit(tmp_path: Path) -> None:
    fio = FaultyIO()
    queue = QueueStore(tmp_path / "queue", FakeClock(), io=fio)
    try:
        intake = Intake(queue, Aliases(), "mx.example.net", FakeClock())
        txn = begin(intake, BOB)
        txn.write(b"Subject: x\r\n\r\n")
        fio.fail("write", error=errno.ENOSPC, times=None)
        txn.write(b"body\r\n" * 10_000)  # past the write buffer: does not raise, the refusal
        txn.write(b"more\r\n")  # waits for the end of DATA
        with pytest.raises(TemporaryError) as info:
            asyncio.run(txn.commit())
        assert info.value.reply == C452_INSUFFICIENT_STORAGE
        assert fio.calls["write"] >= 1
        assert nothing_queued(queue)
    finally:
        queue.close()


def test_empty_message_still_gets_a_received_field(queue: QueueStore, intake: Intake) -> None:
    txn = begin(intake, BOB)
    rec = txn.commit_sync()
    assert body_of(queue, rec).startswith(b"Received: ")
