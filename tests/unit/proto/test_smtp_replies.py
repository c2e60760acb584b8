"""Reply values ⇄ bytes, the reply parser, and the EHLO reply helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.smtp.ehlo import Extensions, ehlo_reply
from pigeon.proto.smtp.errors import RemoteProtocolError
from pigeon.proto.smtp.reply import C250_OK, C354_START_INPUT, C552_MESSAGE_TOO_BIG, Reply
from pigeon.proto.smtp.replyparse import ReplyParser, parse_reply

TABLE = [
    (C250_OK, b"250 2.0.0 OK\r\n"),
    (C354_START_INPUT, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
    (Reply(550, "5.1.1", ("No such user", "see https://example.org")),
     b"550-5.1.1 No such user\r\n550 5.1.1 see https://example.org\r\n"),
    (Reply(220, "", "mx.example ESMTP"), b"220 mx.example ESMTP\r\n"),
    (Reply(334, "", ""), b"334 \r\n"),
    (C552_MESSAGE_TOO_BIG, b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
]


@pytest.mark.parametrize(("reply", "wire"), TABLE)
def test_reply_bytes_round_trip(reply: Reply, wire: bytes) -> None:
    assert reply.to_bytes() == wire
    assert parse_reply(wire) == reply


def test_ehlo_reply_echoes_the_client_name_in_printable_ascii_only() -> None:
    r = ehlo_reply("mx.example", "evil\u0085x\u2028y\u00e9\tz", ["PIPELINING"])
    assert r.to_bytes() == b"250-mx.example Hello evil?x?y??z\r\n250 PIPELINING\r\n"  # RFC 6531 §3.7.4


def test_ehlo_reply_has_no_enhanced_code() -> None:
    r = ehlo_reply("mx.example", "client.example", ["PIPELINING", "SIZE 1000", "8BITMIME", "STARTTLS"])
    assert r.to_bytes() == (
        b"250-mx.example Hello client.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
        b"250-8BITMIME\r\n250 STARTTLS\r\n"
    )


def test_extensions_parse() -> None:
    r = parse_reply(
        b"250-mx.example Hello c\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
        b"250-smtputf8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
        b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN CRAM-MD5\r\n250 X-UNKNOWN a b\r\n"
    )
    e = Extensions.from_reply(r)
    assert e.pipelining and e.eight_bit_mime and e.smtputf8 and e.chunking and e.binarymime
    assert e.dsn and e.enhanced_status_codes and e.starttls
    assert e.size == 1000
    assert e.auth_mechanisms == frozenset({"PLAIN", "LOGIN", "CRAM-MD5"})
    assert e.has("x-unknown") and e.keywords["X-UNKNOWN"] == ("a", "b")
    assert Extensions.parse(["SIZE"]).size == 0
    assert Extensions.parse([]).size is None


def test_parser_handles_pipelined_replies_and_bare_lf() -> None:
    p = ReplyParser()
    p.feed(b"250 2.1.0 Sender OK\r\n250-2.1.5 one\n250 2.1.5 two\r\n354 go ahead\r\n5")
    assert p.next_reply() == Reply(250, "2.1.0", "Sender OK")
    assert p.next_reply() == Reply(250, "2.1.5", ("one", "two"))
    assert p.next_reply() == Reply(354, "", "go ahead")
    assert p.next_reply() is None
    p.feed(b"50 no enhanced code\r\n")
    assert p.next_reply() == Reply(550, "", "no enhanced code")


def test_enhanced_code_class_must_match() -> None:
    assert parse_reply(b"250 5.0.0 odd\r\n") == Reply(250, "", "5.0.0 odd")
    assert parse_reply(b"221\r\n") == Reply(221, "", "")


@pytest.mark.parametrize(
    "wire",
    [b"hello\r\n", b"25 x\r\n", b"250-a\r\n251 b\r\n", b"600 x\r\n", b"250" + b"x" * 3000],
)
def test_malformed_replies_raise(wire: bytes) -> None:
    p = ReplyParser()
    p.feed(wire)
    with pytest.raises(RemoteProtocolError):
        while p.next_reply() is not None:
            pass


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([250, 251, 421, 450, 451, 550, 552, 554]),
    st.lists(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40), min_size=1, max_size=4),
    st.integers(min_value=0, max_value=200),
)
def test_any_reply_round_trips_through_any_split(code: int, lines: list[str], cut: int) -> None:
    reply = Reply(code, f"{code // 100}.0.0", tuple(lines) if len(lines) > 1 else lines[0])
    wire = reply.to_bytes()
    p = ReplyParser()
    cut %= len(wire) + 1
    p.feed(wire[:cut])
    first = p.next_reply()
    p.feed(wire[cut:])
    got = first if first is not None else p.next_reply()
    assert got is not None
    assert got.code == code and got.enhanced == reply.enhanced
    assert got == reply
