"""IDLE sessions woken together (``imapd.idlewake``): every session of a folder gets its own
untagged responses from the group's round, byte for byte what its own sync would write, and
nothing is lost or repeated when DONE races a round (rules 2, 3 and 5)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.store.mailbox import MailStore
from tests.unit.imapd.helpers import RawClient, ServerThread, deliver, message


@pytest.fixture
def server(store: MailStore, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(store, tmp_path) as srv:
        yield srv


def idle(c: RawClient, tag: bytes = b"i") -> None:
    c.send(tag + b" IDLE\r\n")
    assert c.line() == b"+ idling\r\n"


def done(c: RawClient, tag: bytes = b"i") -> list[bytes]:
    """DONE; the lines up to the tagged OK of IDLE (that line excluded)."""
    c.send(b"DONE\r\n")
    lines = c.until(tag)
    assert lines[-1] == tag + b" OK IDLE terminated\r\n"
    return lines[:-1]


def test_a_delivery_reaches_every_idle_session_with_its_own_responses(
        server: ServerThread, store: MailStore) -> None:
    """RFC 3501 §7.3.1/§7.3.2: EXISTS for all; \\Recent for exactly one session (the first
    read-write view to see it); no RECENT for an IMAP4rev2 session (RFC 9051 §7.4)."""
    deliver(store, message(1))
    with RawClient(server.port) as a, RawClient(server.port) as b, RawClient(server.port) as r2:
        for c in (a, b, r2):
            c.login()
        r2.cmd(b"e", b"ENABLE IMAP4rev2")
        for c in (a, b, r2):
            c.cmd(b"s", b"SELECT INBOX")
            idle(c)
        deliver(store, message(2))
        got = {name: [c.line(), *([c.line()] if name != "r2" else [])] for name, c in
               (("a", a), ("b", b), ("r2", r2))}
        assert got["r2"] == [b"* 2 EXISTS\r\n"]
        recent = 0
        for name in ("a", "b"):
            assert got[name][0] == b"* 2 EXISTS\r\n"
            m = re.fullmatch(rb"\* (\d+) RECENT\r\n", got[name][1])
            assert m is not None, got[name]
            recent += int(m.group(1))
        assert recent == 2  # message 1 went to a's SELECT, message 2 to exactly one of them
        for c in (a, b, r2):
            assert done(c) == []  # nothing twice
            assert c.cmd(b"n", b"NOOP") == [b"n OK NOOP completed\r\n"]


def test_flag_changes_and_expunges_by_another_session_reach_idle_sessions(
        server: ServerThread, store: MailStore) -> None:
    """RFC 3501 §7.4.2 FETCH FLAGS and §7.4.1 EXPUNGE, RFC 7162 §3.2.10 VANISHED with QRESYNC,
    written by the group's round while the sessions wait."""
    for n in (1, 2):
        deliver(store, message(n))
    with RawClient(server.port) as idler, RawClient(server.port) as qr, RawClient(server.port) as actor:
        for c in (idler, qr, actor):
            c.login()
        qr.cmd(b"e", b"ENABLE QRESYNC")
        for c in (idler, qr, actor):
            c.cmd(b"s", b"SELECT INBOX")
        idle(idler)
        idle(qr)
        actor.cmd(b"a1", b"STORE 1 +FLAGS.SILENT (\\Flagged)")
        assert re.fullmatch(rb"\* 1 FETCH \(FLAGS \(\\Flagged( \\Recent)?\)\)\r\n", idler.line())
        assert re.fullmatch(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Flagged( \\Recent)?\) MODSEQ \(\d+\)\)\r\n",
                            qr.line())
        actor.cmd(b"a2", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        idler.line()
        qr.line()
        actor.cmd(b"a3", b"EXPUNGE")
        assert idler.line() == b"* 1 EXPUNGE\r\n"
        assert qr.line() == b"* VANISHED 1\r\n"
        assert done(idler) == []
        assert done(qr) == []
        resp = idler.cmd(b"f", b"FETCH 1 (UID)")
        assert resp[0] == b"* 1 FETCH (UID 2)\r\n"  # the session's map moved with what it was told


def test_done_racing_a_round_loses_and_repeats_nothing(server: ServerThread, store: MailStore) -> None:
    """Rules 3 and 5: DONE sent right after a delivery, again and again; the EXISTS of each
    delivery arrives exactly once, during IDLE or at the latest with the next command."""
    deliver(store, message(0))
    with RawClient(server.port) as c, RawClient(server.port) as other:
        c.login()
        other.login()
        c.cmd(b"s", b"SELECT INBOX")
        other.cmd(b"s", b"SELECT INBOX")
        idle(other)  # a second member of the group, so that rounds run for others too
        seen: list[bytes] = []
        for n in range(1, 21):
            idle(c)
            deliver(store, message(n))
            seen += [x for x in done(c) if x.endswith(b" EXISTS\r\n")]
            seen += [x for x in c.cmd(b"n", b"NOOP") if x.endswith(b" EXISTS\r\n")]
            assert seen[-1] == b"* %d EXISTS\r\n" % (n + 1), (n, seen)
        assert seen == [b"* %d EXISTS\r\n" % (n + 1) for n in range(1, 21)]
        told = [x for x in done(other) + other.cmd(b"n", b"NOOP") if x.endswith(b" EXISTS\r\n")]
        assert told[-1] == b"* 21 EXISTS\r\n"  # rounds may merge deliveries, never lose one
        assert told == sorted(set(told), key=lambda x: int(x.split()[1]))  # each count once, rising
