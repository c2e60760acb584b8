"""app.ipc: the typed, versioned messages between the server and its workers.

Every message survives a round trip; every kind of nonsense (not JSON, an unknown op, wrong
types, an unknown field, a wrong version, an over-long line, a queue id that is a path) is
refused with a reason, and the reader goes on with the next line. Nothing raises out of a
reader, whatever the bytes.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.app import ipc
from pigeon.app.ipc import (IPC_VERSION, Changed, Complete, Hello, IpcError, Ready, Schedule, check_hello,
                            decode_from_master, decode_from_worker, encode, master_reader, worker_reader)
from pigeon.core.address import Address
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.proto.smtp.reply import Reply

QID = QueueId("0123456789ABCDEF")
BOB = Address("bob", "example.net")
DELIVERED = RecipientResult(BOB, "delivered", Reply(250, "2.0.0", "delivered to maildir"), "local")
FAILED = RecipientResult(Address("carol", "example.net"), "failed",
                         Reply(550, "5.1.1", ("no such user", "here")), "local")

MESSAGES = [
    Hello(IPC_VERSION, 4242),
    Ready(("smtp",)),
    Ready(("imap", "imaps")),
    Schedule(QID),
    Complete(QID, (DELIVERED, FAILED)),
    Complete(QID, (RecipientResult(Address("jürgen", "bücher.example"), "deferred",
                                   Reply(451, "4.3.0", "try later"), "local"),)),
    Changed("/var/lib/pigeon/mail/example.net/bob"),
]


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def result(**change: object) -> dict[str, object]:
    base: dict[str, object] = {"rcpt": "bob@example.net", "status": "delivered", "code": 250,
                               "enhanced": "2.0.0", "text": ["ok"], "host": "local"}
    base.update(change)
    return base


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_round_trip(msg: ipc.WorkerMessage) -> None:
    data = encode(msg)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert worker_reader().feed(data) == [msg]


def test_the_reader_does_not_care_how_the_bytes_are_cut() -> None:
    data = b"".join(encode(m) for m in MESSAGES)
    whole = worker_reader().feed(data)
    reader = worker_reader()
    pieces = [m for i in range(len(data)) for m in reader.feed(data[i:i + 1])]
    assert pieces == whole == MESSAGES


def test_the_server_says_only_hello() -> None:
    assert decode_from_master(encode(Hello(IPC_VERSION, 1))) == Hello(IPC_VERSION, 1)
    with pytest.raises(IpcError, match="unknown op 'schedule' from the server"):
        decode_from_master(encode(Schedule(QID)).rstrip(b"\n"))


NONSENSE = [
    (b"not json", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (b"\"schedule\"", "not a JSON object"),
    (b"[" * 50_000, "not JSON"),  # nested past the parser's depth: RecursionError, refused too
    (b'{"op": "hello", "version": NaN, "pid": 1}', "not JSON"),
    (b'{"op": "hello", "version": 1' + b"0" * 5000 + b', "pid": 1}', "not JSON"),  # int too long
    (line(id=QID), "unknown op None"),
    (line(op="launch-missiles"), "unknown op 'launch-missiles'"),
    (line(op=["schedule"], id=QID), "unknown op"),
    (line(op="hello", version="1", pid=1), "version is not an integer"),
    (line(op="hello", version=True, pid=1), "version is not an integer"),
    (line(op="hello", version=1.0, pid=1), "version is not an integer"),
    (line(op="hello", version=1, pid=0), "pid is not an integer"),
    (line(op="hello", version=1), "missing pid"),
    (line(op="hello", version=1, pid=1, extra=2), "unknown field extra"),
    (line(op="ready", services=[]), "services"),
    (line(op="ready", services="smtp"), "services"),
    (line(op="ready", services=["SMTP"]), "services"),
    (line(op="ready", services=["smtp/../x"]), "services"),
    (line(op="schedule"), "missing id"),
    (line(op="schedule", id=5), "id is not a queue id"),
    (line(op="schedule", id="../../etc/passwd"), "id is not a queue id"),
    (line(op="schedule", id="0123456789abcdef"), "id is not a queue id"),
    (line(op="schedule", id="0123456789ABCDEI"), "id is not a queue id"),  # I is not in the alphabet
    (line(op="schedule", id="0123456789ABCDE\n"), "id is not a queue id"),
    (line(op="schedule", id=QID + "\n"), "id is not a queue id"),
    (line(op="complete", id=QID), "missing results"),
    (line(op="complete", id=QID, results="nope"), "results is not a non-empty list"),
    (line(op="complete", id=QID, results=[]), "results is not a non-empty list"),
    (line(op="complete", id=QID, results=[["bob@example.net", "delivered", 250, "2.0.0", ["ok"], "local"]]),
     "a result is not an object"),
    (line(op="complete", id=QID, results=[result(status="exploded")]), "status"),
    (line(op="complete", id=QID, results=[result(code=999)]), "code is not an integer in 200..599"),
    (line(op="complete", id=QID, results=[result(code="250")]), "code is not an integer"),
    (line(op="complete", id=QID, results=[result(enhanced="9.9.9")]), "enhanced"),
    (line(op="complete", id=QID, results=[result(rcpt="not an address")]), "rcpt"),
    (line(op="complete", id=QID, results=[result(rcpt=None)]), "rcpt"),
    (line(op="complete", id=QID, results=[result(text=[])]), "text"),
    (line(op="complete", id=QID, results=[result(text=["a\r\n250 forged"])]), "control characters"),
    (line(op="complete", id=QID, results=[result(host="local\nx")]), "control characters"),
    (line(op="complete", id=QID, results=[result(extra=1)]), "unknown field extra"),
    (line(op="changed", dir=5), "dir"),
    (line(op="changed", dir="relative/path"), "not an absolute path"),
    (line(op="changed", dir="/a\u0000b"), "not an absolute path"),
    (line(op="changed", dir="/" + "x" * 5000), "dir"),
]


@pytest.mark.parametrize(("bad", "reason"), NONSENSE, ids=[r for _, r in NONSENSE])
def test_nonsense_is_refused_with_a_reason(bad: bytes, reason: str) -> None:
    with pytest.raises(IpcError, match=reason):
        decode_from_worker(bad)
    good = encode(Schedule(QID))
    out = worker_reader().feed(bad + b"\n" + good)
    assert len(out) == 2 and isinstance(out[0], IpcError) and reason.split()[0] in str(out[0])
    assert out[1] == Schedule(QID)  # the next line still works


def test_an_over_long_line_is_refused_once_and_the_stream_stays_in_step() -> None:
    reader = worker_reader(max_line=100)
    good = encode(Schedule(QID))
    out = reader.feed(b"x" * 250 + b"\n" + good)
    assert len(out) == 2 and "over 100" in str(out[0]) and out[1] == Schedule(QID)


def test_an_over_long_line_that_arrives_in_pieces_is_skipped_to_its_newline() -> None:
    reader = worker_reader(max_line=100)
    out = reader.feed(b'{"op": "schedule", "id": "' + b"A" * 120)  # no newline yet: refused now
    assert len(out) == 1 and "line over 100 octets" in str(out[0])
    assert reader.feed(b"B" * 500) == []  # still the same line: nothing more to say
    assert reader.feed(b'"}\n' + encode(Schedule(QID))) == [Schedule(QID)]


def test_a_line_of_exactly_the_limit_passes() -> None:
    good = encode(Schedule(QID))
    assert worker_reader(max_line=len(good)).feed(good) == [Schedule(QID)]
    out = worker_reader(max_line=len(good) - 1).feed(good)
    assert len(out) == 1 and isinstance(out[0], IpcError)


def test_a_line_cut_short_at_end_of_file_is_refused() -> None:
    reader = worker_reader()
    assert reader.feed(encode(Schedule(QID))[:-5]) == []
    [err] = reader.end()
    assert "cut short" in str(err)
    assert reader.end() == []


def test_encode_refuses_an_over_long_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ipc, "MAX_LINE", 200)
    many = Complete(QID, tuple(DELIVERED for _ in range(10)))
    with pytest.raises(IpcError, match="over the line limit"):
        encode(many)


def test_a_peer_of_another_version_is_refused() -> None:
    assert check_hello(Hello(IPC_VERSION, 7)) == Hello(IPC_VERSION, 7)
    with pytest.raises(IpcError, match=f"speaks ipc version {IPC_VERSION + 1}, this side {IPC_VERSION}"):
        check_hello(Hello(IPC_VERSION + 1, 7))
    with pytest.raises(IpcError, match="first message Schedule instead of hello"):
        check_hello(Schedule(QID))
    with pytest.raises(IpcError, match="first message none"):
        check_hello(None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_no_bytes_make_a_reader_raise(chunks: list[bytes]) -> None:
    for reader in (worker_reader(max_line=128), master_reader(max_line=128)):
        for chunk in chunks:
            for item in reader.feed(chunk):
                assert isinstance(item, (IpcError, Hello, Ready, Schedule, Complete, Changed))
        reader.end()


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=20),
       st.sampled_from(["hello", "ready", "schedule", "complete", "changed", "x"]))
def test_no_json_makes_the_decoder_raise_anything_but_ipc_error(value: object, op: str) -> None:
    fields = dict(value) if isinstance(value, dict) else {"id": value, "results": value, "dir": value}
    fields["op"] = op
    try:
        decode_from_worker(json.dumps(fields).encode())
    except IpcError:
        pass
