"""8-bit → 7-bit conversion: the output is 7-bit and decodes to the same content."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.delivery.mime7bit import has_8bit, header_section_has_8bit, to_7bit
from pigeon.queue.source import FileBody


def _leaves(data: bytes) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    out = []
    for part in msg.walk():
        if not part.is_multipart() and part.get_content_type() != "message/rfc822":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append((part.get_content_type(), payload))
    return out


MULTI = (
    "From: a@b.test\r\nSubject: Grüße\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=XX\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Café = 100 €\r\n.line\r\nFrom the start\r\n"
    "--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
).encode() + bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") + (
    "\r\n--XX\r\nContent-Type: text/plain\r\n\r\nplain ascii part\r\n"
    "--XX\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Subject: inner\r\n\r\nInnér\r\n--XX--\r\n"
).encode()


def test_multipart_converted_and_content_kept() -> None:
    out = to_7bit(MULTI)
    assert out.isascii()
    before, after = _leaves(MULTI), _leaves(out)
    assert [t for t, _ in after] == [t for t, _ in before]
    for (_, b), (_, a) in zip(before, after, strict=True):
        assert a.replace(b"\r\n", b"\n") == b.replace(b"\r\n", b"\n")
    msg = email.message_from_bytes(out, policy=email.policy.default)
    assert str(msg["Subject"]) == "Grüße"
    assert msg["Content-Transfer-Encoding"] == "7bit"  # Rule 2: relabelled multipart
    ctes = [str(p["Content-Transfer-Encoding"]) for p in msg.walk() if not p.is_multipart()]
    assert "quoted-printable" in ctes and "base64" in ctes
    assert b"plain ascii part" in out  # a 7-bit part stays as it was
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))  # RFC 5322 §2.1.1


def test_ascii_message_unchanged() -> None:
    data = b"Subject: x\r\n\r\nhello\r\n"
    assert to_7bit(data) is data


def test_non_mime_message_gets_mime_headers() -> None:
    out = to_7bit("Subject: x\r\n\r\nnaïve\r\n".encode())
    msg = email.message_from_bytes(out, policy=email.policy.default)
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_payload(decode=True) == "naïve\r\n".encode()


def test_invalid_utf8_is_unknown_8bit() -> None:
    out = to_7bit(b"Subject: x\r\n\r\ncaf\xe9\r\n")
    assert out.isascii() and b"unknown-8bit" in out
    assert email.message_from_bytes(out).get_payload(decode=True) == b"caf\xe9\r\n"


def test_scanners(tmp_path: Path) -> None:
    p = tmp_path / "m"
    p.write_bytes(b"Subject: ok\r\n\r\nbody \xc3\xa9\r\n")
    assert has_8bit(FileBody(p)) and not header_section_has_8bit(FileBody(p))
    p.write_bytes(b"Subject: \xc3\xa9\r\n\r\nbody\r\n")
    assert header_section_has_8bit(FileBody(p))
    p.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    assert not has_8bit(FileBody(p))


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=300).filter(lambda t: "\r" not in t),
       st.binary(min_size=1, max_size=300))
def test_roundtrip_property(text: str, blob: bytes) -> None:
    msg = EmailMessage()
    msg["Subject"] = "p"
    msg.set_content(text, cte="8bit") if text.strip() else msg.set_content("x", cte="7bit")
    msg.add_attachment(blob, maintype="application", subtype="octet-stream", cte="base64")
    src = msg.as_bytes(policy=email.policy.SMTP)
    out = to_7bit(src)
    assert out.isascii()
    before, after = _leaves(src), _leaves(out)
    for (_, b), (_, a) in zip(before, after, strict=True):
        assert a.replace(b"\r\n", b"\n") == b.replace(b"\r\n", b"\n")
