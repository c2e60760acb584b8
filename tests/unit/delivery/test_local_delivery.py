"""Local delivery into Maildirs, on real files (pigeon.delivery.local)."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path
from typing import BinaryIO

import pytest

from pigeon.core.address import Address, parse_address
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryAgent, DeliveryJob
from pigeon.queue.source import FileBody
from pigeon.delivery.local import LocalDelivery, delivery_prefix
from pigeon.durable.testing import FaultyIO
from pigeon.store.maildir import MaildirStore
from tests.unit.queueids import fresh_queue_id

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.com")
CAROL = Address("Carol", "example.com")
BODY = b"From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello,\r\nbye.\r\n"
BODY_LF = BODY.replace(b"\r\n", b"\n")


class FakeUsers:
    def __init__(self, *addresses: Address) -> None:
        self.keys = {a.key for a in addresses}
        self.calls = 0

    def user_exists(self, address: Address) -> bool:
        self.calls += 1
        return address.key in self.keys


class BrokenUsers:
    def user_exists(self, address: Address) -> bool:
        raise RuntimeError("directory database is locked")


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(tmp_path / "mail", "mx.example.com")


@pytest.fixture
def body_path(tmp_path: Path) -> Path:
    path = tmp_path / "body"
    path.write_bytes(BODY)
    return path


def _job(body_path: Path, *recipients: Address, sender: Address | None = ALICE) -> DeliveryJob:
    return DeliveryJob(fresh_queue_id(), sender, tuple(recipients), FileBody(body_path))


def _run(agent: DeliveryAgent, job: DeliveryJob) -> list[RecipientResult]:
    return asyncio.run(agent.deliver(job))


def test_delivers_with_return_path_and_delivered_to(store: MaildirStore, body_path: Path) -> None:
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")
    [result] = _run(agent, _job(body_path, BOB))
    assert result.recipient == BOB
    assert result.status == "delivered" and result.final
    assert (result.reply.code, result.reply.enhanced, result.reply.text) == (250, "2.0.0", "delivered to maildir")
    assert result.host == "local"
    [path] = store.list_new(BOB)
    assert path.read_bytes() == b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.com\n" + BODY_LF
    assert list((store.user_root(BOB) / "tmp").iterdir()) == []


def test_null_sender_gets_an_empty_return_path(store: MaildirStore, body_path: Path) -> None:
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")
    [result] = _run(agent, _job(body_path, BOB, sender=None))
    assert result.status == "delivered"
    [path] = store.list_new(BOB)
    assert path.read_bytes().startswith(b"Return-Path: <>\nDelivered-To: bob@example.com\n")


def test_prefix_is_crlf_and_cannot_be_split_by_an_address() -> None:
    assert delivery_prefix(None, BOB) == b"Return-Path: <>\r\nDelivered-To: bob@example.com\r\n"
    evil = Address("x\r\nBcc: y", "example.com")
    assert delivery_prefix(evil, BOB).count(b"\r\n") == 2


def test_several_recipients_one_copy_each_results_in_order(store: MaildirStore, body_path: Path) -> None:
    agent = LocalDelivery(store, FakeUsers(BOB, CAROL), "mx.example.com")
    carol_upper = parse_address("CAROL@Example.com")
    results = _run(agent, _job(body_path, CAROL, BOB, carol_upper))
    assert [r.recipient for r in results] == [CAROL, BOB, carol_upper]
    assert [r.status for r in results] == ["delivered"] * 3
    assert all(r.host == "local" for r in results)
    [bob_copy] = store.list_new(BOB)
    [carol_copy] = store.list_new(CAROL)  # listed twice (same folded address): written once
    assert bob_copy.read_bytes().endswith(BODY_LF)
    assert b"Delivered-To: Carol@example.com\n" in carol_copy.read_bytes()


def test_unknown_user_fails_5_1_1_and_others_still_get_it(store: MaildirStore, body_path: Path) -> None:
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")
    gone = Address("gone", "example.com")
    results = _run(agent, _job(body_path, gone, BOB))
    assert results[0].status == "failed" and results[0].final
    assert (results[0].reply.code, results[0].reply.enhanced) == (550, "5.1.1")
    assert results[0].reply.text == "<gone@example.com>: user unknown"
    assert results[1].status == "delivered"
    assert not store.user_root(gone).exists()
    assert len(store.list_new(BOB)) == 1


def test_first_delivery_creates_the_maildir(store: MaildirStore, body_path: Path) -> None:
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")
    assert not store.root.exists()
    assert _run(agent, _job(body_path, BOB))[0].status == "delivered"
    assert all((store.user_root(BOB) / d).is_dir() for d in ("cur", "new", "tmp"))


@pytest.mark.parametrize(
    ("err", "code", "enhanced"),
    [(errno.ENOSPC, 452, "4.3.1"), (errno.EDQUOT, 452, "4.3.1"), (errno.EACCES, 451, "4.3.0"),
     (errno.EIO, 451, "4.3.0")],
)
def test_os_error_defers_with_a_log_line(
    store: MaildirStore, body_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    err: int, code: int, enhanced: str,
) -> None:
    def failing(address: Address, prefix: bytes, body: BinaryIO, folder: str | None = None) -> Path:
        raise OSError(err, "simulated")

    monkeypatch.setattr(store, "deliver_shared", failing)
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")
    job = _job(body_path, BOB)
    with caplog.at_level(logging.ERROR, logger="pigeon.delivery.local"):
        [result] = _run(agent, job)
    assert result.status == "deferred" and not result.final
    assert (result.reply.code, result.reply.enhanced) == (code, enhanced)
    assert any(job.queue_id in r.getMessage() and "deferred" in r.getMessage() for r in caplog.records)


def test_real_disk_error_during_write_defers_and_leaves_no_file(tmp_path: Path, body_path: Path) -> None:
    fio = FaultyIO()
    store = MaildirStore(tmp_path / "mail", "mx.example.com", io=fio)
    store.ensure(BOB)
    fio.fail("fsync", error=errno.ENOSPC)
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")
    [result] = _run(agent, _job(body_path, BOB))
    assert (result.status, result.reply.code, result.reply.enhanced) == ("deferred", 452, "4.3.1")
    assert store.list_new(BOB) == []
    assert list((store.user_root(BOB) / "tmp").iterdir()) == []


def test_missing_body_file_defers(store: MaildirStore, tmp_path: Path) -> None:
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")
    [result] = _run(agent, _job(tmp_path / "no-such-body", BOB))
    assert (result.status, result.reply.code, result.reply.enhanced) == ("deferred", 451, "4.3.0")


def test_unexpected_exception_defers_with_a_log_line(
    store: MaildirStore, body_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = LocalDelivery(store, BrokenUsers(), "mx.example.com")
    with caplog.at_level(logging.ERROR, logger="pigeon.delivery.local"):
        results = _run(agent, _job(body_path, BOB, CAROL))
    assert [(r.status, r.reply.code, r.reply.enhanced) for r in results] == [("deferred", 451, "4.3.0")] * 2
    assert any("unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)


def test_unmappable_mailbox_name_fails_permanently(store: MaildirStore, body_path: Path) -> None:
    huge = Address("a", "ü" * 200)  # 1,200 octets once %-encoded: longer than any file name
    agent = LocalDelivery(store, FakeUsers(huge), "mx.example.com")
    [result] = _run(agent, _job(body_path, huge))
    assert (result.status, result.reply.code, result.reply.enhanced) == ("failed", 553, "5.1.3")


def test_nasty_recipient_lands_under_the_mail_root(store: MaildirStore, body_path: Path) -> None:
    nasty = [Address("../../x", "example.com"), Address(".hidden", ".."), parse_address('"a/b c"@example.com'),
             parse_address("jürgen@bücher.example", utf8=True)]
    agent = LocalDelivery(store, FakeUsers(*nasty), "mx.example.com")
    results = _run(agent, _job(body_path, *nasty))
    assert [r.status for r in results] == ["delivered"] * 4
    root = store.root.resolve()
    for rcpt in nasty:
        [path] = store.list_new(rcpt)
        assert path.resolve().is_relative_to(root)
    assert sorted(p.name for p in store.root.parent.iterdir()) == ["body", "mail"]


def test_many_concurrent_jobs_to_one_user(store: MaildirStore, body_path: Path) -> None:
    agent = LocalDelivery(store, FakeUsers(BOB), "mx.example.com")

    async def main() -> list[list[RecipientResult]]:
        return await asyncio.gather(*(agent.deliver(_job(body_path, BOB)) for _ in range(200)))

    all_results = asyncio.run(main())
    assert all(r[0].status == "delivered" for r in all_results)
    assert len(store.list_new(BOB)) == 200
    assert store.dir_fsyncs < 200  # the new/ fsync was shared (group commit)
