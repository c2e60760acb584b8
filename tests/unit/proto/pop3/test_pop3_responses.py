"""POP3 responses, dot-stuffing, CAPA lines, TOP cuts and command parsing (byte-exact tables)."""

from __future__ import annotations

import pytest

from pigeon.proto.pop3 import events as ev
from pigeon.proto.pop3.commands import parse_command
from pigeon.proto.pop3.message import top
from pigeon.proto.pop3.responses import (
    ERR_IN_USE,
    ERR_SYNTAX,
    ERR_UNKNOWN_COMMAND,
    MAX_RESPONSE_LINE,
    Continuation,
    MultiLine,
    Response,
    capabilities,
    dot_stuff,
)


@pytest.mark.parametrize(
    ("response", "wire"),
    [
        (Response(True), b"+OK\r\n"),
        (Response(True, "2 320"), b"+OK 2 320\r\n"),
        (Response(False, "no such message"), b"-ERR no such message\r\n"),
        (ERR_IN_USE, b"-ERR [IN-USE] Maildrop already locked by another POP3 session\r\n"),
        (Response(False, "a\r\nb"), b"-ERR a  b\r\n"),
        (Response(False, code="SYS/TEMP"), b"-ERR [SYS/TEMP]\r\n"),
        (Continuation(""), b"+ \r\n"),
        (Continuation("VXNlcm5hbWU6"), b"+ VXNlcm5hbWU6\r\n"),
    ],
)
def test_single_line_bytes(response: Response | Continuation, wire: bytes) -> None:
    assert response.to_bytes() == wire


def test_first_line_is_cut_to_512_octets() -> None:
    wire = Response(True, "x" * 1000).to_bytes()
    assert len(wire) == MAX_RESPONSE_LINE and wire.endswith(b"\r\n")
    # a cut never splits a UTF-8 sequence
    assert Response(True, "é" * 400).to_bytes().decode("utf-8").endswith("\r\n")


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
        (b"no newline at end", b"no newline at end\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        # a bare LF also starts a line for the client: the dot after it is stuffed
        (b"a\n.\r\n", b"a\n..\r\n.\r\n"),
        (b"x.y\r\n", b"x.y\r\n.\r\n"),
    ],
)
def test_dot_stuffing(body: bytes, wire: bytes) -> None:
    assert dot_stuff(body) == wire


def test_multiline_rendering_and_sign() -> None:
    m = MultiLine.of_lines(Response(True, "2 messages"), ["1 120", "2 200"])
    assert m.to_bytes() == b"+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"
    with pytest.raises(ValueError):
        MultiLine(Response(False), b"")


def test_capabilities() -> None:
    assert capabilities(user=False, sasl=(), stls=True) == [
        "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS",
    ]
    assert capabilities(user=True, sasl=("PLAIN", "LOGIN"), stls=False, implementation="Pigeon") == [
        "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN LOGIN",
        "IMPLEMENTATION Pigeon",
    ]


MSG = b"From: a@b\r\nSubject: s\r\n\r\nl1\r\nl2\r\nl3\r\n"


@pytest.mark.parametrize(
    ("message", "n", "expected"),
    [
        (MSG, 0, b"From: a@b\r\nSubject: s\r\n\r\n"),
        (MSG, 1, b"From: a@b\r\nSubject: s\r\n\r\nl1\r\n"),
        (MSG, 2, b"From: a@b\r\nSubject: s\r\n\r\nl1\r\nl2\r\n"),
        (MSG, 3, MSG),
        (MSG, 99, MSG),
        (b"From: a@b\r\n", 5, b"From: a@b\r\n"),  # no body at all
        (b"\r\nbody\r\nmore\r\n", 1, b"\r\nbody\r\n"),  # empty header block
        (b"H: v\r\n\r\nno newline", 1, b"H: v\r\n\r\nno newline"),
        (b"H: v\n\nl1\nl2\n", 1, b"H: v\n\nl1\n"),  # bare LF lines end lines too
    ],
)
def test_top(message: bytes, n: int, expected: bytes) -> None:
    assert top(message, n) == expected


@pytest.mark.parametrize(
    ("line", "verb", "event"),
    [
        (b"USER alice@example.test", "USER", ev.User("alice@example.test")),
        (b"user Alice", "USER", ev.User("Alice")),
        (b"PASS secret with spaces ", "PASS", ev.Pass("secret with spaces ")),
        (b"PASS", "PASS", ERR_SYNTAX),
        (b"USER", "USER", ERR_SYNTAX),
        (b"STAT", "STAT", ev.Stat()),
        (b"stat  ", "STAT", ev.Stat()),
        (b"STAT 1", "STAT", ERR_SYNTAX),
        (b"LIST", "LIST", ev.List(None)),
        (b"LIST 3", "LIST", ev.List(3)),
        (b"LIST x", "LIST", ERR_SYNTAX),
        (b"LIST 1 2", "LIST", ERR_SYNTAX),
        (b"LIST -1", "LIST", ERR_SYNTAX),
        (b"LIST 12345678901", "LIST", ERR_SYNTAX),
        (b"RETR 1", "RETR", ev.Retr(1)),
        (b"RETR", "RETR", ERR_SYNTAX),
        (b"RETR \xd9\xa3", "RETR", ERR_SYNTAX),  # Arabic-Indic digit three: not ASCII
        (b"DELE 0", "DELE", ev.Dele(0)),
        (b"TOP 1 0", "TOP", ev.Top(1, 0)),
        (b"TOP 1", "TOP", ERR_SYNTAX),
        (b"UIDL", "UIDL", ev.Uidl(None)),
        (b"UIDL 2", "UIDL", ev.Uidl(2)),
        (b"NOOP", "NOOP", ev.Noop()),
        (b"RSET", "RSET", ev.Rset()),
        (b"QUIT", "QUIT", ev.Quit()),
        (b"CAPA", "CAPA", ev.Capa()),
        (b"STLS", "STLS", ev.Stls()),
        (b"AUTH", "AUTH", ev.Auth("")),
        (b"AUTH plain", "AUTH", ev.Auth("PLAIN")),
        (b"AUTH PLAIN =", "AUTH", ev.Auth("PLAIN", "")),
        (b"AUTH PLAIN AGFAAGI=", "AUTH", ev.Auth("PLAIN", "AGFAAGI=")),
        (b"AUTH PLAIN a b", "AUTH", ERR_SYNTAX),
        (b"APOP alice 0123456789abcdef", "APOP", ERR_UNKNOWN_COMMAND),
        (b"XYZZY", "", ERR_UNKNOWN_COMMAND),
        (b"", "", ERR_UNKNOWN_COMMAND),
        (b"\xff\xfe", "", ERR_SYNTAX),
    ],
)
def test_parse_command(line: bytes, verb: str, event: object) -> None:
    assert parse_command(line) == (verb, event)


def test_secrets_are_not_in_repr() -> None:
    assert "hunter2" not in repr(ev.Pass("hunter2"))
    assert "AGFAAGI" not in repr(ev.Auth("PLAIN", "AGFAAGI="))
    assert "AGFAAGI" not in repr(ev.AuthResponse("AGFAAGI="))


def test_dot_stuffing_matches_the_rule_on_random_bodies() -> None:
    """RFC 1939 §3: every line that starts with "." gets one more; against a regex statement
    of the rule, on bodies made of the characters that matter."""
    import random
    import re

    rule = re.compile(rb"(^|\n)\.")
    rnd = random.Random(1939)
    for _ in range(5000):
        body = bytes(rnd.choice(b".\r\na") for _ in range(rnd.randint(0, 12)))
        stuffed = rule.sub(rb"\1..", body)
        if stuffed and not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        assert dot_stuff(body) == stuffed + b".\r\n", body
