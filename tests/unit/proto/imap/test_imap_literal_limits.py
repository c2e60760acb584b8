"""Framing core, issue 14: literals before authentication are small and never read when refused;
after it, big APPEND literals come out in pieces (``LiteralData``) instead of being held."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.imap.commands import Append, Login
from pigeon.proto.imap.connection import LITERAL_PIECE, PREAUTH_MAX_LITERAL, SMALL_COMMAND_LINES, ImapServerConnection
from pigeon.proto.imap.errors import LocalProtocolError, ParseError
from pigeon.proto.imap.events import (
    BadCommand,
    Command,
    ConnectionClosed,
    ImapEvent,
    LiteralData,
    LiteralTooBig,
    NeedContinuation,
)
from pigeon.proto.imap.parser import parse_command
from pigeon.proto.imap.reader import SpooledLiteral
from tests.unit.proto.imap.imap_harness import events

BIG = 52428799  # the probe's APPEND INBOX {52428799+}


# --- before authentication ----------------------------------------------------------------------


def test_login_literal_up_to_the_preauth_limit_is_read() -> None:
    pw = b"p" * PREAUTH_MAX_LITERAL
    evs = events(b"a LOGIN fred {%d+}\r\n" % len(pw) + pw + b"\r\n")
    assert len(evs) == 1 and isinstance(evs[0], Command)
    cmd = parse_command(evs[0])
    assert isinstance(cmd, Login) and cmd.password == pw.decode()


def test_preauth_sync_literal_over_the_limit_is_refused_unread() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a LOGIN fred {%d}\r\n" % (PREAUTH_MAX_LITERAL + 1))
    assert c.next_event() == LiteralTooBig("a", PREAUTH_MAX_LITERAL + 1, True)  # no "+": BAD
    c.receive_data(b"b APPEND INBOX {%d}\r\n" % BIG)  # the limit is APPEND's too before login
    assert c.next_event() == LiteralTooBig("b", BIG, True)
    c.receive_data(b"c NOOP\r\n")
    assert c.next_event() == Command("c", "NOOP", (b"c NOOP",))
    assert c.input_buffered == 0


def test_preauth_big_non_sync_literal_closes_without_reading() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a APPEND INBOX {%d+}\r\n" % BIG + b"x" * 65536)
    assert c.next_event() == LiteralTooBig("a", BIG, False)
    closed = c.next_event()
    assert isinstance(closed, ConnectionClosed) and closed.reason is not None
    assert "before authentication" in closed.reason
    for _ in range(100):  # the client goes on sending: nothing is kept, nothing is examined
        c.receive_data(b"x" * 65536)
        assert c.input_buffered == 0
        assert c.next_event() == closed


def test_preauth_big_non_sync_literal_after_an_overlong_line_closes_too() -> None:
    c = ImapServerConnection(max_line=100)
    c.receive_data(b"a LOGIN " + b"u" * 200 + b" {%d+}\r\n" % BIG + b"x" * 1000)
    assert c.next_event() == BadCommand("a", "line too long")
    closed = c.next_event()
    assert isinstance(closed, ConnectionClosed) and closed.reason is not None
    assert c.input_buffered == 0


def test_preauth_small_refused_non_sync_literal_is_still_skipped() -> None:
    c = ImapServerConnection(max_line=64)
    data = b"a LOGIN" + b" {0+}\r\n" * 60 + b"\r\nb NOOP\r\n"
    assert events(data, c) == [BadCommand("a", "command too long"), Command("b", "NOOP", (b"b NOOP",))]


def test_preauth_append_command_is_small_as_any_other() -> None:
    c = ImapServerConnection(max_line=1024)
    piece = b"m" * 1000
    data = b"a APPEND INBOX" + b" {1000+}\r\n" + (piece + b" {1000+}\r\n") * 4 + piece + b"\r\nb NOOP\r\n"
    evs = events(data, c)
    assert evs[0] == LiteralTooBig("a", 1000, False)  # over SMALL_COMMAND_LINES x max_line
    assert evs[1:] == [Command("b", "NOOP", (b"b NOOP",))]
    assert not any(isinstance(e, LiteralData) for e in evs)  # nothing is ever spooled before login


def test_logged_in_lifts_the_limits() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a LOGIN fred pw\r\n")
    assert isinstance(c.next_event(), Command)
    c.logged_in()
    c.receive_data(b"b APPEND INBOX {%d}\r\n" % (PREAUTH_MAX_LITERAL + 1))
    assert c.next_event() == NeedContinuation("b", PREAUTH_MAX_LITERAL + 1)
    with pytest.raises(LocalProtocolError):
        c.logged_in()  # in the middle of a command


# --- after authentication: big APPEND literals in pieces --------------------------------------------


def _feed(c: ImapServerConnection, data: bytes, rng: random.Random, bound: int) -> list[ImapEvent]:
    """Feed ``data`` in random cuts (as reads deliver it); check the core's memory on the way."""
    out: list[ImapEvent] = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 65536)
        c.receive_data(data[pos : pos + n])
        pos += n
        while (ev := c.next_event()) is not None:
            out.append(ev)
        assert c.input_buffered <= bound
    return out


def test_big_append_is_passed_on_in_pieces_with_bounded_memory() -> None:
    size = 20 * 1000 * 1000
    rng = random.Random(14)
    body = rng.randbytes(size // 4) * 4
    c = ImapServerConnection(authenticated=True)
    c.receive_data(b"a APPEND INBOX (\\Seen) {%d}\r\n" % size)
    assert c.next_event() == NeedContinuation("a", size)
    evs = _feed(c, body + b"\r\n", rng, bound=LITERAL_PIECE + 65536)
    pieces = [e for e in evs if isinstance(e, LiteralData)]
    assert [len(p.data) for p in pieces[:-1]] == [LITERAL_PIECE] * (len(pieces) - 1)
    assert [p.last for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert hashlib.sha256(b"".join(p.data for p in pieces)).digest() == hashlib.sha256(body).digest()
    assert isinstance(evs[-1], Command) and len(evs) == len(pieces) + 1
    cmd = evs[-1]
    assert cmd.spooled == (1,) and cmd.fragments == (b"a APPEND INBOX (\\Seen) {%d}" % size, b"", b"")
    assert cmd.size < 100  # the command holds no message octets
    parsed = parse_command(cmd)
    assert isinstance(parsed, Append)
    assert parsed.messages[0].data == SpooledLiteral(0, size) and parsed.messages[0].flags == ("\\Seen",)


def test_small_append_literals_stay_in_memory_until_the_command_limit() -> None:
    c = ImapServerConnection(max_line=1024, authenticated=True)
    kept = SMALL_COMMAND_LINES * 1024
    msg = b"Subject: s\r\n\r\n" + b"b" * 986  # 1000 octets
    n = kept // 1000 + 3
    data = b"a APPEND INBOX" + b" {1000+}\r\n".join([b""] + [msg] * n) + b"\r\n"
    evs = events(data, c)
    cmd = evs[-1]
    assert isinstance(cmd, Command) and cmd.spooled and cmd.size <= kept
    kept_msgs = (len(cmd.fragments) - 1) // 2 - len(cmd.spooled)
    assert kept_msgs >= 3 and len([e for e in evs if isinstance(e, LiteralData)]) == len(cmd.spooled)
    parsed = parse_command(cmd)
    assert isinstance(parsed, Append) and len(parsed.messages) == n
    spooled = [m.data for m in parsed.messages if isinstance(m.data, SpooledLiteral)]
    assert spooled == [SpooledLiteral(i, 1000) for i in range(len(cmd.spooled))]
    assert all(m.data == msg for m in parsed.messages if isinstance(m.data, bytes))


def test_a_passed_on_literal_is_no_mailbox_name() -> None:
    c = ImapServerConnection(authenticated=True)
    name = b"n" * (LITERAL_PIECE + 1)
    evs = events(b"a APPEND {%d+}\r\n" % len(name) + name + b" {1+}\r\nx\r\n", c)
    cmd = evs[-1]
    assert isinstance(cmd, Command)
    with pytest.raises(ParseError, match="too long here"):
        parse_command(cmd)


def test_nul_in_a_passed_on_literal_is_left_to_the_session() -> None:
    c = ImapServerConnection(authenticated=True, literal_piece=16)
    evs = events(b"a APPEND INBOX ~{40+}\r\n" + b"\x00" * 40 + b"\r\n", c)
    cmd = evs[-1]
    assert isinstance(cmd, Command)
    parsed = parse_command(cmd)
    assert isinstance(parsed, Append) and parsed.messages[0].binary
    assert parsed.messages[0].data == SpooledLiteral(0, 40)


DIALOGUES = [
    b"a APPEND INBOX {100+}\r\n" + bytes(range(100)) + b"\r\nb NOOP\r\n",
    b"a APPEND INBOX (\\Seen) {10}\r\n0123456789 ~{33+}\r\n" + b"\r\n" * 16 + b"z \r\nb NOOP\r\n",
    b"a APPEND INBOX {32+}\r\n" + b"y" * 32 + b"\r\n",
    b"a APPEND INBOX {3000+}\r\n" + b"z" * 3000 + b"\r\nb NOOP\r\n",
]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(DIALOGUES), st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_pieces_do_not_depend_on_how_the_input_was_cut(data: bytes, cuts: list[int]) -> None:
    def conn() -> ImapServerConnection:
        return ImapServerConnection(max_line=1024, max_literal=2000, authenticated=True, literal_piece=16)

    whole = events(data, conn(), eof=True)
    c = conn()
    got: list[object] = []
    prev = 0
    for p in [*sorted({x % (len(data) + 1) for x in cuts}), len(data)]:
        if p == prev:
            continue
        c.receive_data(data[prev:p])
        prev = p
        while (ev := c.next_event()) is not None:
            got.append(ev)
        assert c.input_buffered <= 16 + 4000 + 1024
    c.receive_data(b"")
    got.append(c.next_event())
    assert got == whole
