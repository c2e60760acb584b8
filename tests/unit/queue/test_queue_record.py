"""The record codec (pigeon.queue.record): round trip and refusal of damaged records."""

from __future__ import annotations

import json

import pytest

from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.queue.record import (
    Attempt,
    CorruptRecord,
    QueueRecord,
    RcptState,
    decode_record,
    encode_record,
)
from tests.unit.queueids import fresh_queue_id

BOB = Address("bob", "example.net")
LIST = Address("team", "example.net")


def record(qid: QueueId) -> QueueRecord:
    env = Envelope(
        None,
        [Recipient(LIST, ("SUCCESS", "FAILURE"), "rfc822;team@example.net")],
        smtputf8=True,
        ret="HDRS",
        envid="ENV1",
        client=ClientInfo("2001:db8::1", "client.example", "ESMTPSA", "bob", "TLSv1.3 X"),
    )
    rc = RcptState(BOB, LIST, ("SUCCESS", "FAILURE"), "rfc822;team@example.net", "deferred",
                   [Attempt(10.0, "mx[192.0.2.1]:25", "451 4.7.1 greylisted")], 20.0, "451 4.7.1 greylisted")
    return QueueRecord(qid, env, 5.0, 1234, "deferred", [rc], delay_warned=True)


def test_round_trip() -> None:
    qid = fresh_queue_id()
    rec = record(qid)
    assert decode_record(encode_record(rec), qid, "deferred") == rec


def test_state_comes_from_the_directory_not_the_file() -> None:
    qid = fresh_queue_id()
    assert decode_record(encode_record(record(qid)), qid, "hold").state == "hold"


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("version"),
        lambda d: d.__setitem__("version", 2),
        lambda d: d.__setitem__("version", True),
        lambda d: d.__setitem__("size", "big"),
        lambda d: d.__setitem__("created", None),
        lambda d: d.__setitem__("rcpts", {}),
        lambda d: d["rcpts"][0].__setitem__("status", "lost"),
        lambda d: d["rcpts"][0].__setitem__("address", "no-at-sign"),
        lambda d: d["rcpts"][0].__setitem__("attempts", [{"time": "x"}]),
        lambda d: d["rcpts"][0].__setitem__("orcpt", 5),
        lambda d: d.__setitem__("delay_warned", "yes"),
        lambda d: d.__setitem__("envelope", []),
        lambda d: d["envelope"].__setitem__("recipients", "bob"),
        lambda d: d["envelope"].__setitem__("sender", "@@"),
    ],
)
def test_damaged_records_are_corrupt(damage: object) -> None:
    qid = fresh_queue_id()
    doc = json.loads(encode_record(record(qid)))
    damage(doc)  # type: ignore[operator]
    with pytest.raises(CorruptRecord):
        decode_record(json.dumps(doc).encode(), qid, "active")


def test_unreadable_bytes_and_wrong_id_are_corrupt() -> None:
    qid = fresh_queue_id()
    with pytest.raises(CorruptRecord):
        decode_record(b"\xff\xfe", qid, "active")
    with pytest.raises(CorruptRecord):
        decode_record(b"[1, 2", qid, "active")
    with pytest.raises(CorruptRecord, match="does not match"):
        decode_record(encode_record(record(qid)), fresh_queue_id(), "active")
