"""Framing core: lines, literals, continuation requests, limits, raw lines, STARTTLS."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.imap.connection import ImapServerConnection, literal_announcement
from pigeon.proto.imap.errors import LocalProtocolError
from pigeon.proto.imap.events import (
    BadCommand,
    Command,
    ConnectionClosed,
    LiteralTooBig,
    NeedContinuation,
    RawLine,
)
from tests.unit.proto.imap.imap_harness import events


def test_simple_command_and_bare_lf() -> None:
    assert events(b"a1 NOOP\r\nA2 capability\n") == [
        Command("a1", "NOOP", (b"a1 NOOP",)),
        Command("A2", "CAPABILITY", (b"A2 capability",)),
    ]


def test_incomplete_line_waits() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a1 NO")
    assert c.next_event() is None
    c.receive_data(b"OP\r\n")
    assert c.next_event() == Command("a1", "NOOP", (b"a1 NOOP",))
    assert c.next_event() is None


def test_sync_literal_asks_for_continuation() -> None:
    c = ImapServerConnection()
    c.receive_data(b'a LOGIN {4}\r\n')
    assert c.next_event() == NeedContinuation("a", 4)
    assert c.next_event() is None
    c.receive_data(b"fred {3}\r\n")
    assert c.next_event() == NeedContinuation("a", 3)
    c.receive_data(b"pw!\r\n")
    assert c.next_event() == Command("a", "LOGIN", (b"a LOGIN {4}", b"fred", b" {3}", b"pw!", b""))


def test_non_sync_literal_needs_no_continuation() -> None:
    assert events(b"a LOGIN {4+}\r\nfred {3+}\r\npw!\r\n") == [
        Command("a", "LOGIN", (b"a LOGIN {4+}", b"fred", b" {3+}", b"pw!", b""))
    ]


def test_literal_may_hold_crlf_and_braces() -> None:
    (ev,) = events(b"a APPEND x {9+}\r\nab\r\n{2}\r\n\r\n")
    assert isinstance(ev, Command)
    assert ev.fragments == (b"a APPEND x {9+}", b"ab\r\n{2}\r\n", b"")


def test_literal8_framed_like_a_literal() -> None:
    (ev,) = events(b"a APPEND x ~{3+}\r\n\x00\x01\x02\r\n")
    assert isinstance(ev, Command) and ev.fragments[1] == b"\x00\x01\x02"


def test_sync_literal_too_big_is_refused_unread() -> None:
    c = ImapServerConnection(max_literal=100)
    assert events(b"a APPEND INBOX {101}\r\nb NOOP\r\n", c) == [
        LiteralTooBig("a", 101, True),
        Command("b", "NOOP", (b"b NOOP",)),
    ]


def test_non_sync_literal_too_big_is_skipped_with_rest_of_command() -> None:
    c = ImapServerConnection(max_literal=10, authenticated=True)
    data = b"a APPEND INBOX {20+}\r\n" + b"x" * 20 + b" {5+}\r\nb NOOP\r\nc NOOP\r\n"
    assert events(data, c) == [LiteralTooBig("a", 20, False), Command("c", "NOOP", (b"c NOOP",))]


def test_skipped_literal_in_small_chunks_keeps_no_memory() -> None:
    c = ImapServerConnection(max_literal=10, authenticated=True)
    c.receive_data(b"a APPEND INBOX {1000000+}\r\n")
    assert c.next_event() == LiteralTooBig("a", 1000000, False)
    for _ in range(100):
        c.receive_data(b"y" * 10000)
        assert c.next_event() is None
        assert c.input_buffered == 0
    c.receive_data(b"\r\nz NOOP\r\n")
    assert c.next_event() == Command("z", "NOOP", (b"z NOOP",))


def test_huge_literal_announcement() -> None:
    (ev,) = events(b"a APPEND INBOX {" + b"9" * 40 + b"}\r\n")
    assert isinstance(ev, LiteralTooBig) and ev.size >= 10**20 and ev.synchronizing


def test_literal_limit_is_small_outside_append() -> None:
    c = ImapServerConnection(max_line=1000, max_literal=1_000_000, authenticated=True)
    assert events(b"a LOGIN {1001}\r\n", c) == [LiteralTooBig("a", 1001, True)]
    assert events(b"b APPEND INBOX {1001}\r\n", c) == [NeedContinuation("b", 1001)]
    assert events(b"c UID append INBOX {5000}\r\n", ImapServerConnection(max_line=1000, authenticated=True)) == [
        NeedContinuation("c", 5000)
    ]


def test_literal_minus_limits_non_sync_literals() -> None:
    c = ImapServerConnection(literal_plus=False, authenticated=True)
    data = b"a APPEND INBOX {4097+}\r\n" + b"m" * 4097 + b"\r\nb NOOP\r\n"
    assert events(data, c) == [LiteralTooBig("a", 4097, False), Command("b", "NOOP", (b"b NOOP",))]
    ok = events(b"a APPEND INBOX {4096+}\r\n" + b"m" * 4096 + b"\r\n", ImapServerConnection(literal_plus=False))
    assert len(ok) == 1 and isinstance(ok[0], Command)


def test_command_total_limit() -> None:
    c = ImapServerConnection(max_line=100, max_literal=1000, max_command=150, authenticated=True)
    data = b"a APPEND INBOX {100+}\r\n" + b"m" * 100 + b" {40+}\r\n" + b"n" * 40 + b"\r\nb NOOP\r\n"
    assert events(data, c) == [LiteralTooBig("a", 40, False), Command("b", "NOOP", (b"b NOOP",))]


def test_too_many_small_literals_outside_append() -> None:
    c = ImapServerConnection(max_line=64)
    data = b"a LOGIN" + b" {0+}\r\n" * 60 + b"\r\nb NOOP\r\n"
    evs = events(data, c)
    assert evs[0] == BadCommand("a", "command too long")
    assert evs[1:] == [Command("b", "NOOP", (b"b NOOP",))]


def test_overlong_line_is_rejected_and_resynchronised() -> None:
    c = ImapServerConnection(max_line=100)
    c.receive_data(b"a1 SEARCH " + b"X" * 500)
    assert c.next_event() == BadCommand("a1", "line too long")
    assert c.next_event() is None
    assert c.input_buffered == 0
    c.receive_data(b"Y" * 1000)
    assert c.next_event() is None
    assert c.input_buffered == 0
    c.receive_data(b"\r\na2 NOOP\r\n")
    assert c.next_event() == Command("a2", "NOOP", (b"a2 NOOP",))


def test_overlong_line_ending_in_non_sync_literal_skips_it() -> None:
    c = ImapServerConnection(max_line=100)
    data = b"a1 LOGIN " + b"u" * 200 + b" {5+}\r\nNOOPS\r\na2 NOOP\r\n"
    assert events(data, c) == [BadCommand("a1", "line too long"), Command("a2", "NOOP", (b"a2 NOOP",))]


def test_overlong_continuation_line() -> None:
    c = ImapServerConnection(max_line=100)
    data = b"a1 LOGIN {2+}\r\nab " + b"p" * 300 + b"\r\na2 NOOP\r\n"
    assert events(data, c) == [BadCommand("a1", "line too long"), Command("a2", "NOOP", (b"a2 NOOP",))]


def test_missing_or_bad_tag() -> None:
    evs = events(b"+ NOOP\r\n* NOOP\r\n{5+}\r\nabcde\r\n\"x\" NOOP\r\nok NOOP\r\n")
    assert evs == [
        BadCommand(None, "missing or invalid tag"),
        BadCommand(None, "missing or invalid tag"),
        BadCommand(None, "missing or invalid tag"),
        BadCommand(None, "missing or invalid tag"),
        Command("ok", "NOOP", (b"ok NOOP",)),
    ]


def test_eight_bit_and_nul_in_tag() -> None:
    evs = events(b"\xc3\xa9 NOOP\r\na\x00 NOOP\r\n")
    assert evs == [BadCommand(None, "missing or invalid tag")] * 2


def test_empty_lines_ignored() -> None:
    assert events(b"\r\n\r\n\na NOOP\r\n") == [Command("a", "NOOP", (b"a NOOP",))]


def test_raw_line_mode_for_sasl_and_idle_done() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a AUTHENTICATE PLAIN\r\nAGZyZWQAcHc=\r\nb IDLE\r\nDONE\r\n")
    assert c.next_event() == Command("a", "AUTHENTICATE", (b"a AUTHENTICATE PLAIN",))
    c.expect_line()
    assert c.next_event() == RawLine(b"AGZyZWQAcHc=")
    assert c.next_event() == Command("b", "IDLE", (b"b IDLE",))
    c.expect_line()
    assert c.next_event() == RawLine(b"DONE")
    assert c.next_event() is None


def test_raw_line_is_not_a_literal() -> None:
    c = ImapServerConnection()
    c.expect_line()
    c.receive_data(b"abc {5+}\r\nx NOOP\r\n")
    assert c.next_event() == RawLine(b"abc {5+}")
    assert c.next_event() == Command("x", "NOOP", (b"x NOOP",))


def test_overlong_raw_line() -> None:
    c = ImapServerConnection(max_line=64)
    c.expect_line()
    c.receive_data(b"A" * 100 + b" {5+}\r\nx NOOP\r\n")
    assert c.next_event() == BadCommand(None, "line too long")
    assert c.next_event() == Command("x", "NOOP", (b"x NOOP",))


def test_raw_line_secret_not_in_repr() -> None:
    assert "AGZy" not in repr(RawLine(b"AGZyZWQ="))
    assert "hunter2" not in repr(Command("a", "LOGIN", (b"a LOGIN u hunter2",)))


def test_expect_line_mid_command_is_misuse() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a LOGIN {3}\r\n")
    assert isinstance(c.next_event(), NeedContinuation)
    with pytest.raises(LocalProtocolError):
        c.expect_line()
    with pytest.raises(LocalProtocolError):
        c.start_tls()


def test_cancel_line() -> None:
    c = ImapServerConnection()
    c.expect_line()
    c.cancel_line()
    c.receive_data(b"a NOOP\r\n")
    assert isinstance(c.next_event(), Command)


def test_start_tls_drops_pipelined_input() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a STARTTLS\r\nb LOGIN evil pw\r\n")
    assert c.next_event() == Command("a", "STARTTLS", (b"a STARTTLS",))
    c.start_tls()
    assert c.next_event() is None
    c.receive_data(b"c NOOP\r\n")
    assert c.next_event() == Command("c", "NOOP", (b"c NOOP",))


def test_eof() -> None:
    c = ImapServerConnection()
    c.receive_data(b"a LOGIN {10}\r\nabc")
    assert isinstance(c.next_event(), NeedContinuation)
    c.receive_data(b"")
    assert c.next_event() == ConnectionClosed()
    assert c.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"x")


def test_complete_command_before_eof_is_delivered() -> None:
    assert events(b"a NOOP\r\n", eof=True) == [Command("a", "NOOP", (b"a NOOP",)), ConnectionClosed()]


def test_literal_announcement_helper() -> None:
    assert literal_announcement(b"a {12}") == (12, False)
    assert literal_announcement(b"a {12+}") == (12, True)
    assert literal_announcement(b"a ~{0}") == (0, False)
    assert literal_announcement(b"a {}") is None
    assert literal_announcement(b"a {+}") is None
    assert literal_announcement(b"a {1 2}") is None
    assert literal_announcement(b'a "{12}"') is None
    assert literal_announcement(b"a {\xd9\xa3}") is None  # non-ASCII digits


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        ImapServerConnection(max_line=10)


DIALOGUES = [
    b"a1 LOGIN {4}\r\nfred {3}\r\npw!\r\na2 SELECT INBOX\r\n",
    b"a APPEND INBOX (\\Seen) {10+}\r\n0123456789 {3+}\r\nabc\r\nb NOOP\r\n",
    b"a APPEND INBOX {2000+}\r\n" + b"z" * 2000 + b"\r\nb NOOP\r\n",
    b"a SEARCH " + b"X" * 3000 + b"\r\nb NOOP\r\n\r\nc FETCH 1 ALL\n",
    b"+bad\r\n{3+}\r\nabc\r\nok NOOP\r\n",
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(DIALOGUES), st.lists(st.integers(min_value=0, max_value=5000), max_size=12))
def test_any_chunking_gives_same_events(data: bytes, cuts: list[int]) -> None:
    whole = events(data, ImapServerConnection(max_line=1024, max_literal=1000, authenticated=True), eof=True)
    c = ImapServerConnection(max_line=1024, max_literal=1000, authenticated=True)
    got: list[object] = []
    prev = 0
    for p in [*sorted({x % (len(data) + 1) for x in cuts}), len(data)]:
        if p == prev:
            continue  # b"" would mean EOF
        c.receive_data(data[prev:p])
        prev = p
        while (ev := c.next_event()) is not None:
            got.append(ev)
        assert c.input_buffered <= 2048 + 1024  # bounded: a literal (≤1000) or a line (≤1024)
    c.receive_data(b"")
    got.append(c.next_event())
    assert got == whole


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000))
def test_random_garbage_never_raises_and_stays_bounded(data: bytes) -> None:
    c = ImapServerConnection(max_line=256, max_literal=512, authenticated=True)
    for i in range(0, len(data), 97):
        c.receive_data(data[i : i + 97])
        while (ev := c.next_event()) is not None:
            assert not isinstance(ev, ConnectionClosed)
        assert c.input_buffered <= 512 + 97 + 256
