"""Server core property tests: the same input split at arbitrary points gives the same events."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.smtp.server import ServerConnection
from tests.unit.proto.smtp_harness import EHLO_MAIL_RCPT, Session, merged

DIALOGUES = [
    EHLO_MAIL_RCPT + b"DATA\r\nSubject: t\r\n\r\n..dot\r\nline\r\n.\r\nQUIT\r\n",
    EHLO_MAIL_RCPT + b"DATA\r\nbad\nline\r\n.\r\nNOOP\r\n",
    EHLO_MAIL_RCPT + b"DATA\r\nx\n.\r\nMAIL FROM:<evil@example.org>\r\n.\r\nRSET\r\n",
    EHLO_MAIL_RCPT + b"BDAT 7\r\n.\r\n.\r\nBDAT 3 LAST\r\nabcQUIT\r\n",
    b"EHLO c\r\nAUTH PLAIN\r\nAGFAYg==\r\nNOOP " + b"x" * 600 + b"\r\nHELP\r\n",
    EHLO_MAIL_RCPT + b"DATA\r\n" + b"y" * 3000 + b"\r\n" + b"z" * 300 + b"\r\n.\r\nQUIT\r\n",
]


def run(data: bytes, cuts: list[int]) -> tuple[list[object], bytes]:
    s = Session(ServerConnection(2000, hard_line_limit=1000))
    points = sorted({c % (len(data) + 1) for c in cuts})
    prev = 0
    for p in [*points, len(data)]:
        s.feed(data[prev:p])
        prev = p
    s.eof()
    return list(merged(s.events)), s.out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(DIALOGUES), st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_split_points_do_not_change_events(data: bytes, cuts: list[int]) -> None:
    assert run(data, cuts) == run(data, [])


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(DIALOGUES))
def test_byte_at_a_time(data: bytes) -> None:
    assert run(data, list(range(len(data)))) == run(data, [])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_arbitrary_data_content_never_ends_early_or_crashes(body: bytes, cuts: list[int]) -> None:
    # Whatever the content, the core never raises, and only <CRLF>.<CRLF> ends the data.
    data = EHLO_MAIL_RCPT + b"DATA\r\n" + body
    events, _ = run(data, cuts)
    ended = any(type(e).__name__ == "EndOfData" for e in events)
    assert ended == (b"\r\n.\r\n" in b"\r\n" + body)
