"""Reading back and editing a spooled message (queue.body rule 5, cleanup rule 8), in memory
and in its file, and the Junk folder it may be filed into."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pigeon.cleanup.intake import Intake
from pigeon.clocks import FakeClock
from pigeon.core.address import Address, parse_address
from pigeon.core.envelope import JUNK, ClientInfo, Envelope, Recipient
from pigeon.queue.body import BodyWriter
from pigeon.queue.store import FileQueueStore


@pytest.mark.parametrize("memory", [0, 1 << 20])
def test_body_chunks_and_splice(tmp_path: Path, memory: int) -> None:
    body = BodyWriter("Q1", tmp_path / "b", memory=memory)  # type: ignore[arg-type]
    data = b"".join(b"line %06d\r\n" % i for i in range(20000))  # 240 KB: several file buffers
    for i in range(0, len(data), 1000):
        body.write(data[i : i + 1000])
    assert b"".join(body.chunks()) == data
    assert b"".join(body.chunks(5, 7)) == data[5:]
    body.splice(b"New-Field: 1\r\n", 0)
    body.splice(b"Replaced: 2\r\n", len(b"New-Field: 1\r\n") + 11)
    expected = b"Replaced: 2\r\n" + data[11:]
    assert body.size == len(expected)
    assert b"".join(body.chunks()) == expected
    body.write(b"tail\r\n")
    if memory:
        assert body.take() == expected + b"tail\r\n"
    else:
        body.seal()
        assert (tmp_path / "b").read_bytes() == expected + b"tail\r\n"
        assert not (tmp_path / "b.splice").exists()


def test_splice_past_memory_spills_to_the_file(tmp_path: Path) -> None:
    body = BodyWriter("Q2", tmp_path / "b", memory=100)  # type: ignore[arg-type]
    body.write(b"x" * 90)
    body.splice(b"H" * 50, 0)
    assert not body.in_memory and body.size == 140
    body.seal()
    assert (tmp_path / "b").read_bytes() == b"H" * 50 + b"x" * 90


def test_splice_refuses_nonsense(tmp_path: Path) -> None:
    body = BodyWriter("Q3", tmp_path / "b", memory=0)  # type: ignore[arg-type]
    body.write(b"abc")
    with pytest.raises(ValueError):
        body.splice(b"", 4)
    body.abort()
    with pytest.raises(ValueError):
        body.splice(b"x", 0)


class Expand:
    def expand(self, address: Address) -> list[Address]:
        return [address]


@pytest.mark.parametrize("size", [100, 300_000])  # in memory, and in the queue file
def test_transaction_edits_before_commit(tmp_path: Path, size: int) -> None:
    clock = FakeClock(1_800_000_000.0)
    queue = FileQueueStore(tmp_path / "q", clock)
    intake = Intake(queue, Expand(), "mx.example.test", clock)
    env = Envelope(parse_address("a@out.test"), client=ClientInfo("192.0.2.1", "c.test", "ESMTP"))
    txn = intake.begin(env)
    txn.add_rcpt(Recipient(parse_address("bob@example.test")))
    head = b"From: a@out.test\r\nAuthentication-Results: mx.example.test; spf=pass\r\nSubject: s\r\n"
    body = b"\r\n" + b"b" * size + b"\r\n"
    txn.write(head + body[:50])
    txn.write(body[50:])
    assert txn.complete()
    assert txn.has_field("authentication-results")
    spooled = b"".join(txn.spooled())
    assert spooled.startswith(b"Received: from c.test") and spooled.endswith(head + body)
    section = spooled[: txn.header_length]
    assert section.endswith(b"Subject: s\r\n")
    txn.replace_header(section.replace(b"Authentication-Results: mx.example.test; spf=pass\r\n", b""))
    txn.prepend(b"Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=out.test\r\n")
    assert b"".join(txn.spooled())[: txn.header_length].endswith(b"Subject: s\r\n")
    txn.quarantine()
    record = asyncio.run(txn.commit())
    assert record.envelope.folder == JUNK
    with queue.open_body(record.id) as f:
        stored = f.read()
    assert stored.startswith(b"Authentication-Results: mx.example.test; spf=fail")
    assert stored.count(b"Authentication-Results") == 1 and stored.endswith(body)
    assert queue.load(record.id).envelope.folder == JUNK  # kept in the record


def test_envelope_folder_round_trips_and_is_absent_for_inbox() -> None:
    env = Envelope(None, folder=JUNK)
    assert Envelope.from_json(env.to_json()).folder == JUNK
    assert "folder" not in Envelope(None).to_json()
    assert Envelope.from_json({**Envelope(None).to_json(), "folder": "../x"}).folder is None
