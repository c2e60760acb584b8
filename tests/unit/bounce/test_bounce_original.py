"""Reading the original back out of the queue (pigeon.bounce.original)."""

from __future__ import annotations

import io

import pytest

from pigeon.bounce.original import LfToCrlf, iter_crlf, read_headers, to_crlf


def test_header_section_stops_at_the_empty_line() -> None:
    body = io.BytesIO(b"A: 1\r\nB: 2\r\n continued\r\n\r\nbody: not a header\r\n")
    headers = read_headers(body)
    assert headers.raw == b"A: 1\r\nB: 2\r\n continued\r\n"
    assert not headers.truncated
    assert headers.get("b") == "2\r\n continued"


def test_header_section_ends_at_a_non_field_line() -> None:
    headers = read_headers(io.BytesIO(b"A: 1\r\nthis is body text\r\n"))
    assert headers.raw == b"A: 1\r\n"


def test_header_section_of_a_headers_only_message() -> None:
    assert read_headers(io.BytesIO(b"A: 1\r\nB: 2")).raw == b"A: 1\r\nB: 2"


def test_header_section_split_across_reads() -> None:
    text = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(2000)) + b"\r\nbody"
    headers = read_headers(io.BytesIO(text))  # ~220 kB: several 64 kB reads
    assert headers.raw == text[: text.index(b"\r\n\r\n") + 2]


def test_header_section_is_capped_at_a_line_end() -> None:
    text = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(200)) + b"\r\nbody"
    headers = read_headers(io.BytesIO(text), limit=1000)
    assert headers.truncated
    assert len(headers.raw) <= 1000 and headers.raw.endswith(b"\r\n")
    assert text.startswith(headers.raw)


def test_bare_lf_headers_become_crlf() -> None:
    assert read_headers(io.BytesIO(b"A: 1\nB: 2\n\nbody\n")).raw == b"A: 1\r\nB: 2\r\n"
    assert to_crlf(b"a\nb\r\nc") == b"a\r\nb\r\nc"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_streaming_crlf_does_not_depend_on_the_cut(size: int) -> None:
    data = b"one\r\ntwo\nthree\r\n\r\nfour\rfive\n\n"
    out = b"".join(iter_crlf(io.BytesIO(data), chunk_size=size))
    assert out == b"one\r\ntwo\r\nthree\r\n\r\nfour\rfive\r\n\r\n"


def test_cr_then_lf_in_the_next_chunk() -> None:
    conv = LfToCrlf()
    assert conv.feed(b"a\r") + conv.feed(b"\nb\n") == b"a\r\nb\r\n"
    assert conv.feed(b"") == b""
