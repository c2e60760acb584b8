"""The streaming header-section scanner (pigeon.proto.message.headers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pigeon.proto.message.headers import HeaderScanner

MSG = (
    b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"received : from c\r\n\tby d; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Subject: Received: not a field name here\r\n"
    b"X-Received-Count: 3\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"\r\n"
    b"Received: in the body does not count\r\n"
)


def run(scanner: HeaderScanner, chunks: list[bytes]) -> tuple[bytes, bytes | None]:
    header = b""
    tail: bytes | None = None
    for c in chunks:
        if tail is not None:
            tail += c
            continue
        s = scanner.feed(c)
        header += s.header
        tail = s.tail
    if tail is None:
        s = scanner.finish()
        header += s.header
        tail = s.tail
    return header, tail


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def test_counts_received_case_insensitively_only_in_headers() -> None:
    sc = HeaderScanner(1 << 20)
    header, tail = run(sc, [MSG])
    assert sc.received == 2
    assert sc.seen == {"received", "date"}
    assert header + (tail or b"") == MSG
    assert tail == b"\r\nReceived: in the body does not count\r\n"
    assert not sc.in_headers


@given(st.lists(st.integers(min_value=0, max_value=len(MSG)), max_size=12))
def test_any_chunking_gives_the_same_result(cuts: list[int]) -> None:
    sc = HeaderScanner(1 << 20)
    header, tail = run(sc, split(MSG, cuts))
    assert sc.received == 2 and sc.seen == {"received", "date"}
    assert header + (tail or b"") == MSG
    assert tail is not None and tail.startswith(b"\r\n")


def test_header_section_ends_at_a_non_field_line() -> None:
    sc = HeaderScanner(1 << 20)
    header, tail = run(sc, [b"Subject: x\r\nthis is body text\r\nReceived: no\r\n"])
    assert header == b"Subject: x\r\n"
    assert tail == b"this is body text\r\nReceived: no\r\n"
    assert sc.received == 0


def test_message_ending_inside_headers_without_newline() -> None:
    sc = HeaderScanner(1 << 20)
    header, tail = run(sc, [b"Subject: x\r\nDate: y"])
    assert header == b"Subject: x\r\nDate: y" and tail is None
    assert sc.in_headers and not sc.ends_with_newline and "date" in sc.seen


def test_bare_lf_lines_are_understood() -> None:
    sc = HeaderScanner(1 << 20)
    header, tail = run(sc, [b"Received: x\nReceived: y\n\nbody\n"])
    assert sc.received == 2 and tail == b"\nbody\n"


def test_header_limit_is_bounded_even_for_one_endless_line() -> None:
    sc = HeaderScanner(1000)
    for _ in range(100):
        sc.feed(b"X" * 100)  # never a newline
    assert sc.too_big
    assert len(sc._partial) == 0  # nothing held back past the limit
