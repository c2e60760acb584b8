"""The trace and fix-up fields cleanup writes (pigeon.cleanup.received)."""

from __future__ import annotations

import re

import pytest

from pigeon.cleanup.received import (
    address_literal,
    message_id,
    missing_headers,
    received_header,
    with_protocol,
)
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo


def test_received_header_for_one_recipient_with_tls() -> None:
    client = ClientInfo("192.0.2.7", "mail.example.org", "ESMTPS", None, "TLSv1.3 TLS_AES_256_GCM_SHA384")
    text = received_header(client, "mx.example.net", "QID0000000000000", [Address("bob", "example.net")],
                           1_700_000_000.0).decode()
    lines = text.split("\r\n")
    assert lines[0] == "Received: from mail.example.org ([192.0.2.7])"
    assert lines[1] == "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)"
    assert lines[2] == "\tby mx.example.net (Pigeon) with ESMTPS id QID0000000000000"
    assert re.fullmatch(r"\tfor <bob@example\.net>; \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", lines[3])
    assert lines[4] == "" and len(lines) == 5


def test_received_header_hides_recipients_when_several() -> None:
    client = ClientInfo("2001:db8::1", "c.example", "ESMTPA", "bob")
    text = received_header(client, "mx.example.net", "Q", [Address("a", "x.y"), Address("b", "x.y")], 0.0).decode()
    assert text.startswith("Received: from c.example ([IPv6:2001:db8::1])\r\n\tby mx.example.net (Pigeon) with ESMTPA id Q;\r\n\t")
    assert "for" not in text and "bob" not in text


def test_received_header_cannot_be_forged_through_helo() -> None:
    client = ClientInfo("192.0.2.7", "evil (by trusted.example); x\r\nX-Injected: 1", "ESMTP")
    text = received_header(client, "mx.example.net", "Q", [], 0.0).decode()
    assert "\r\nX-Injected" not in text and "(by" not in text
    assert text.count("\r\n") == 3  # three folded lines, nothing injected


@pytest.mark.parametrize("helo", ["evil\u0085X-Injected:\u2028x.example", "j\u00f6rg-pc\u200b", "a\x80b\x9fc"])
def test_received_header_stays_ascii_whatever_the_helo(helo: str) -> None:
    # U+0085 (NEL), U+2028 and the other C1 controls are line breaks to Unicode-aware parsers;
    # RFC 5321 §4.1.1.1 and RFC 6531 §3.7.1 allow only an ASCII name in HELO/EHLO anyway.
    text = received_header(ClientInfo("192.0.2.7", helo, "ESMTP"), "mx.example.net", "Q", [], 0.0)
    assert text.isascii()
    first = text.split(b"\r\n")[0].decode()
    assert first == "Received: from " + "".join(c if c.isascii() else "?" for c in helo) + " ([192.0.2.7])"
    assert "".join(chr(c) for c in text).splitlines()[0] == first  # no line break hidden inside
    assert text.count(b"\r\n") == 3


def test_received_header_for_local_submission() -> None:
    text = received_header(ClientInfo("local", protocol="local", authenticated_as="alice"), "h.example", "Q",
                           [Address("b", "x.y")], 0.0).decode()
    assert text.startswith("Received: by h.example (Pigeon, from userid alice) id Q\r\n\tfor <b@x.y>; ")


def test_with_protocol_rfc3848_and_rfc6531() -> None:
    def w(proto: str, tls: str | None = None, auth: str | None = None, utf8: bool = False) -> str | None:
        return with_protocol(ClientInfo("192.0.2.1", "h", proto, auth, tls), utf8)

    assert w("SMTP") == "SMTP"
    assert w("ESMTP") == "ESMTP"
    assert w("ESMTP", tls="TLSv1.3 X") == "ESMTPS"
    assert w("ESMTP", auth="bob") == "ESMTPA"
    assert w("ESMTPSA") == "ESMTPSA"
    assert w("ESMTP", tls="TLSv1.2 X", auth="bob") == "ESMTPSA"
    assert w("ESMTPS", utf8=True) == "UTF8SMTPS"
    assert w("LMTP") == "LMTP"
    assert w("local") is None


def test_address_literals() -> None:
    assert address_literal("192.0.2.1") == "[192.0.2.1]"
    assert address_literal("::ffff:192.0.2.1") == "[192.0.2.1]"
    assert address_literal("2001:0db8::0001") == "[IPv6:2001:db8::1]"


def test_missing_headers() -> None:
    assert missing_headers({"date", "message-id"}, "Q", "h.example", 0.0) == b""
    out = missing_headers({"date"}, "Q", "h.example", 0.0)
    assert out == f"Message-ID: {message_id('Q', 'h.example')}\r\n".encode() == b"Message-ID: <Q@h.example>\r\n"
    both = missing_headers(set(), "Q", "h.example", 0.0).decode()
    assert re.fullmatch(r"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\nMessage-ID: <Q@h\.example>\r\n", both)
