"""SEARCH matching helpers (RFC 3501 §6.4.4)."""

from __future__ import annotations

import datetime

import pytest

from pigeon.store.mime import (
    Headers,
    body_contains,
    body_texts,
    header_contains,
    parse_message,
    sent_date,
    text_contains,
)
from tests.unit.store.mime.corpus import ALTERNATIVE, EIGHT_BIT, MIXED, NESTED, RFC3501, crlf


def test_header_keys_match_decoded_text_case_insensitively() -> None:
    assert header_contains(EIGHT_BIT, "to", "ANDRÉ")  # RFC 2047 Q word in Latin-1
    assert header_contains(EIGHT_BIT, "Subject", "grüsse".replace("ss", "ß"))
    assert header_contains(EIGHT_BIT, "from", "müller")
    assert not header_contains(EIGHT_BIT, "cc", "")  # no Cc field
    assert header_contains(EIGHT_BIT, "to", "")  # empty needle: field present
    assert header_contains(RFC3501, "CC", "klensin")
    assert not header_contains(RFC3501, "cc", "gray")
    enc = crlf("Subject: =?utf-8?B?w6l0w6k=?= =?utf-8?q?_chaud?=\n\n")
    assert header_contains(enc, "subject", "ÉTÉ CHAUD")


def test_header_fast_path_accepts_header_only_bytes() -> None:
    header = RFC3501[: RFC3501.index(b"\r\n\r\n") + 4]
    assert header_contains(header, "subject", "minutes")
    assert header_contains(Headers.of_message(header), "message-id", "b27397")
    assert sent_date(header) == datetime.date(1996, 7, 17)


def test_body_decodes_transfer_encoding_and_charset() -> None:
    assert body_contains(ALTERNATIVE, "CAFÉ")  # QP + UTF-8 html part
    assert body_contains(ALTERNATIVE, "plain body")
    assert not body_contains(ALTERNATIVE, "preamble")  # not a part
    assert body_contains(MIXED, "hello WORLD")  # base64 text part
    assert body_contains(EIGHT_BIT, "schöne")
    latin = crlf("Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\nZ2Fy528=\n")
    assert body_contains(latin, "GARÇO")


def test_body_skips_non_text_and_reaches_attached_messages() -> None:
    assert body_contains(NESTED, "inner text")  # inside message/rfc822 > multipart
    assert not body_contains(NESTED, "begin 644")  # application/octet-stream
    assert list(body_texts(parse_message(NESTED))) == ["intro", "inner text", "<b>inner</b>"]
    assert not body_contains(NESTED, "fwd")  # a header, not body


def test_text_searches_header_and_body() -> None:
    assert text_contains(NESTED, "FWD")
    assert text_contains(NESTED, "inner text")
    assert text_contains(EIGHT_BIT, "andré")
    assert not text_contains(NESTED, "absent words")
    assert text_contains(parse_message(NESTED), "subject: fwd")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Wed, 17 Jul 1996 23:59:59 -1100", datetime.date(1996, 7, 17)),  # zone disregarded
        ("1 Jan 2024 00:00 +1400", datetime.date(2024, 1, 1)),
        ("Fri, 21 Nov 97 09:55:06 GMT", datetime.date(1997, 11, 21)),
        ("not a date", None),
        ("Thu, 31 Feb 2024 10:00:00 +0000", None),
    ],
)
def test_sent_date(value: str, expected: datetime.date | None) -> None:
    assert sent_date(crlf(f"Date: {value}\n\n")) == expected


def test_sent_date_absent() -> None:
    assert sent_date(b"Subject: x\r\n\r\n") is None
