"""The MIME notice (pigeon.bounce.compose): structure, headers, boundary safety, encodings."""

from __future__ import annotations

import email
import email.policy
from dataclasses import replace
from email.message import EmailMessage, Message

import pytest

from pigeon.bounce.compose import BoundaryClash, Notice, build_dsn, explanation, iter_dsn
from pigeon.bounce.fields import RecipientReport
from pigeon.proto.message.date import rfc5322_date
from pigeon.core.address import Address

ALICE = Address("alice", "example.org")
BOB = Address("bob", "example.net")
TEAM = Address("team", "example.net")
T0 = 1_800_000_000.0
BOUNDARY = "=_0123456789abcdef0123456789abcdef.0123456789ABCDEF"
ORIGINAL_HEADERS = b"Received: from x\r\n\tby y; Thu, 1 Jan 2026 00:00:00 +0000\r\nSubject: hello\r\n"

FAILED = RecipientReport(BOB, TEAM, None, "failed", "5.1.1", "550 5.1.1 User unknown",
                         "mx.example.net", T0 + 10)


def notice(**changes: object) -> Notice:
    base = Notice(
        kind="failure", audience="sender", hostname="mx.example.org", to=ALICE,
        original_sender=ALICE, original_id="0123456789ABCDEF", arrival=T0, date=T0 + 20,
        envid=None, recipients=(FAILED,), returned="headers", too_big=False, utf8=False,
        eight_bit=False, boundary=BOUNDARY, message_id="<n1.0123456789ABCDEF@mx.example.org>",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_top_level_headers_byte_exact() -> None:
    data = build_dsn(notice(in_reply_to="<orig@example.org>"), [ORIGINAL_HEADERS])
    head = data[: data.index(b"\r\n\r\n") + 4]
    assert head == (
        f"Date: {rfc5322_date(T0 + 20)}\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        "To: <alice@example.org>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <n1.0123456789ABCDEF@mx.example.org>\r\n"
        "In-Reply-To: <orig@example.org>\r\n"
        "References: <orig@example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f"\tboundary=\"{BOUNDARY}\"\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
    ).encode()


def test_structure_parses_as_multipart_report() -> None:
    msg = parse(build_dsn(notice(), [ORIGINAL_HEADERS]))
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Pigeon-Double-Bounce"] is None
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    text = parts[0].get_content()
    assert "<bob@example.net>" in text and "(expanded from <team@example.net>)" in text
    assert "550 5.1.1 User unknown" in text
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list) and len(blocks) == 2
    per_message, per_rcpt = blocks
    assert isinstance(per_message, Message) and isinstance(per_rcpt, Message)
    assert per_message["Reporting-MTA"] == "dns; mx.example.org"
    assert per_message["Arrival-Date"] == rfc5322_date(T0)
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 User unknown"
    assert parts[2].get_payload(decode=True) == ORIGINAL_HEADERS
    assert all(line.endswith(b"\r") or line == b"" for line in build_dsn(notice()).split(b"\n"))


def test_full_original_is_message_rfc822() -> None:
    original = ORIGINAL_HEADERS + b"\r\nthe body\r\n"
    msg = parse(build_dsn(notice(returned="full"), [original[:7], original[7:]]))
    part = list(msg.iter_parts())[2]
    assert part.get_content_type() == "message/rfc822"
    inner = part.get_content()
    assert inner["Subject"] == "hello"
    assert inner.get_content().strip() == "the body"


def test_no_original_means_two_parts() -> None:
    msg = parse(build_dsn(notice(returned="none"), [b"ignored"]))
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "message/delivery-status"]


@pytest.mark.parametrize(
    ("kind", "audience", "subject"),
    [
        ("delay", "sender", "Delayed Mail (still being retried)"),
        ("success", "sender", "Successful Mail Delivery Report"),
        ("failure", "postmaster", "Postmaster Notice: Undelivered Mail with Null Sender"),
        ("failure", "copy", "Postmaster Copy: Undelivered Mail"),
    ],
)
def test_subjects_and_double_bounce_mark(kind: str, audience: str, subject: str) -> None:
    msg = parse(build_dsn(notice(kind=kind, audience=audience), [ORIGINAL_HEADERS]))
    assert msg["Subject"] == subject
    assert (msg["X-Pigeon-Double-Bounce"] == "yes") is (audience != "sender")


def test_boundary_in_original_is_caught_even_across_chunks() -> None:
    data = b"x" * 100 + f"--{BOUNDARY}".encode() + b"\r\n"
    cut = 100 + 10  # the boundary is split between two chunks
    with pytest.raises(BoundaryClash):
        build_dsn(notice(returned="full"), [data[:cut], data[cut:]])


def test_boundary_in_reply_text_is_caught() -> None:
    hostile = replace(FAILED, reply=f"550 5.0.0 --{BOUNDARY}")
    with pytest.raises(BoundaryClash):
        build_dsn(notice(recipients=(hostile,)))


def test_streaming_passes_original_chunks_through() -> None:
    chunks = [b"A: b\r\n"] * 5
    pieces = list(iter_dsn(notice(), chunks))
    assert pieces[1:6] == chunks  # head, the untouched chunks, then the closing delimiter
    assert pieces[-1] == f"\r\n--{BOUNDARY}--\r\n".encode()


def test_non_ascii_reply_gives_utf8_quoted_printable_text() -> None:
    r = replace(FAILED, reply="550 5.1.1 Benutzer unbekannt: Müller")
    data = build_dsn(notice(recipients=(r,)), [ORIGINAL_HEADERS])
    assert data.isascii()
    text_part = list(parse(data).iter_parts())[0]
    assert text_part["Content-Transfer-Encoding"] == "quoted-printable"
    assert text_part.get_content_charset() == "utf-8"
    assert "Müller" in text_part.get_content()
    blocks = list(parse(data).iter_parts())[1].get_payload()
    assert isinstance(blocks, list) and isinstance(blocks[1], Message)
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 Benutzer unbekannt: M?ller"


def test_global_types_for_smtputf8() -> None:
    user = Address("用户", "例子.广告")
    r = replace(FAILED, final=user, original=user)
    headers = "Subject: 你好\r\n".encode()
    data = build_dsn(notice(recipients=(r,), utf8=True, eight_bit=True, to=user), [headers])
    assert b"Content-Type: message/global-delivery-status\r\n" in data
    assert b"Content-Type: message/global-headers\r\n" in data
    assert "Final-Recipient: utf-8; 用户@例子.广告\r\n".encode() in data
    assert b"Content-Transfer-Encoding: 8bit\r\n\r\nThis is a MIME" in data  # top level 8bit
    full = build_dsn(notice(recipients=(r,), utf8=True, returned="full", eight_bit=True),
                     [headers + b"\r\nbody\r\n"])
    assert b"Content-Type: message/global\r\n" in full


def test_too_big_and_relayed_explanations() -> None:
    text = explanation(notice(too_big=True, max_returned=1024))
    assert "larger than 1024 bytes" in text
    relayed = replace(FAILED, action="relayed", status="2.0.0", reply="250 2.0.0 Ok")
    text = explanation(notice(kind="success", recipients=(relayed,)))
    assert "successfully delivered" in text and "does not report delivery status" in text
    assert all(len(line) <= 78 for line in text.split("\r\n"))
