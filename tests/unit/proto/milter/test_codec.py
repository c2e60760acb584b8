"""The milter codec, byte for byte (libmilter's mfdef.h, Postfix's milter8.c)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pigeon.proto.milter import codec as m


@pytest.mark.parametrize(("built", "wire"), [
    (m.optneg(), b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\x33\x00\x1f\xff\xff"),
    (m.connect("[192.0.2.1]", "192.0.2.1", 25), b"\x00\x00\x00\x1aC[192.0.2.1]\x004\x00\x19192.0.2.1\x00"),
    (m.connect("[::1]", "::1", 2525), b"\x00\x00\x00\x0eC[::1]\x006\x09\xdd::1\x00"),
    (m.connect("unknown", "", 0), b"\x00\x00\x00\x0aCunknown\x00U"),
    (m.helo("client.test"), b"\x00\x00\x00\x0dHclient.test\x00"),
    (m.mail("a@b.test"), b"\x00\x00\x00\x0cM<a@b.test>\x00"),
    (m.mail("", ["SIZE=10"]), b"\x00\x00\x00\x0cM<>\x00SIZE=10\x00"),
    (m.rcpt("bob@x.test"), b"\x00\x00\x00\x0eR<bob@x.test>\x00"),
    (m.data(), b"\x00\x00\x00\x01T"),
    (m.header(b"Subject", b"hi there"), b"\x00\x00\x00\x12LSubject\x00hi there\x00"),
    (m.eoh(), b"\x00\x00\x00\x01N"),
    (m.body(b"abc\r\n"), b"\x00\x00\x00\x06Babc\r\n"),
    (m.end_of_body(), b"\x00\x00\x00\x01E"),
    (m.abort(), b"\x00\x00\x00\x01A"),
    (m.quit(), b"\x00\x00\x00\x01Q"),
    (m.macros(m.MAIL, [("i", "Q1"), ("{mail_addr}", "a@b")]),
     b"\x00\x00\x00\x17DMi\x00Q1\x00{mail_addr}\x00a@b\x00"),
])
def test_commands_are_byte_exact(built: bytes, wire: bytes) -> None:
    assert built == wire


def test_offered_actions_are_what_we_carry_out() -> None:
    assert m.ACTIONS_OFFERED == m.ADDHDRS | m.CHGBODY | m.CHGHDRS | m.QUARANTINE | m.SETSYMLIST
    assert not m.ACTIONS_OFFERED & (m.ADDRCPT | m.DELRCPT | m.CHGFROM | m.ADDRCPT_PAR)


@pytest.mark.parametrize(("wire", "response"), [
    (b"\x00\x00\x00\x01c", m.Continue()),
    (b"\x00\x00\x00\x01a", m.Accept()),
    (b"\x00\x00\x00\x01r", m.Reject()),
    (b"\x00\x00\x00\x01t", m.Tempfail()),
    (b"\x00\x00\x00\x01d", m.Discard()),
    (b"\x00\x00\x00\x01s", m.Skip()),
    (b"\x00\x00\x00\x01p", m.Progress()),
    (b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\x21\x00\x00\x00\x40", m.OptNeg(6, 0x21, 0x40)),
    (b"\x00\x00\x00\x19y554 5.7.1 Gtube pattern\x00", m.ReplyCode(554, "554 5.7.1 Gtube pattern")),
    (b"\x00\x00\x00\x0fhX-Spam\x00Yes\x00\x00"[:4] + b"hX-Spam\x00Yes\x00", m.AddHeader("X-Spam", "Yes")),
    (b"\x00\x00\x00\x0di\x00\x00\x00\x00X-A\x00v\x00", m.InsertHeader(0, "X-A", "v")),
    (b"\x00\x00\x00\x0fm\x00\x00\x00\x02Subject\x00\x00", m.ChangeHeader(2, "Subject", "")),
    (b"\x00\x00\x00\x06bnew\r\n", m.ReplaceBody(b"new\r\n")),
    (b"\x00\x00\x00\x06qspam\x00", m.Quarantine("spam")),
    (b"\x00\x00\x00\x06+<x@y>"[:4] + b"+<x@y>\x00"[:5], m.Unsupported("+")),
])
def test_responses_are_decoded(wire: bytes, response: m.Response) -> None:
    fixed = len(wire) - 4
    wire = fixed.to_bytes(4, "big") + wire[4:]  # the length as the filter would write it
    assert m.Decoder().feed(wire) == [response]


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40))
def test_any_split_gives_the_same_responses(cuts: list[int]) -> None:
    wire = (b"\x00\x00\x00\x0chX-Spam\x00Yes\x00" + b"\x00\x00\x00\x06qspam\x00"
            + b"\x00\x00\x00\x19y554 5.7.1 Gtube pattern\x00" + b"\x00\x00\x00\x01a")
    dec = m.Decoder()
    out: list[m.Response] = []
    pos = 0
    for n in cuts:
        out += dec.feed(wire[pos : pos + n])
        pos += n
    out += dec.feed(wire[pos:])
    assert out == [m.AddHeader("X-Spam", "Yes"), m.Quarantine("spam"),
                   m.ReplyCode(554, "554 5.7.1 Gtube pattern"), m.Accept()]


@pytest.mark.parametrize("wire", [
    b"\x00\x00\x00\x00",  # a packet without a command
    (m.MAX_PACKET + 1).to_bytes(4, "big") + b"b",  # over the bound, refused before it arrives
    b"\x00\x00\x00\x01Z",  # unknown code
    b"\x00\x00\x00\x05y55\x00\x00",  # a reply code that is not one
    b"\x00\x00\x00\x03hX\x00",  # a header without its value
    b"\x00\x00\x00\x03m\x00\x00",  # a change without its index
    b"\x00\x00\x00\x05O\x00\x00\x00\x06",  # a short OPTNEG
])
def test_broken_packets_raise(wire: bytes) -> None:
    with pytest.raises(m.MilterProtocolError):
        m.Decoder().feed(wire)


def test_negotiation_keeps_only_what_we_offered() -> None:
    neg = m.negotiate(m.OptNeg(6, 0xFFFF, m.NOHELO | m.NR_HDR | 0x40000000))
    assert neg.actions == m.ACTIONS_OFFERED
    assert neg.skips(m.NOHELO) and not neg.skips(m.NOMAIL)
    assert not neg.replies(m.NR_HDR) and neg.replies(m.NR_RCPT)
    assert not neg.protocol & 0x40000000
    with pytest.raises(m.MilterProtocolError):
        m.negotiate(m.OptNeg(1, 0, 0))


def test_body_chunks_are_bounded() -> None:
    data = b"x" * (m.MAX_BODY_CHUNK * 2 + 3)
    chunks = list(m.body_chunks(data))
    assert [len(c) for c in chunks] == [m.MAX_BODY_CHUNK, m.MAX_BODY_CHUNK, 3]
    with pytest.raises(ValueError):
        m.body(data)
