"""proto.linebuffer.LineBuffer: the bounded line input of the SMTP, IMAP and POP3 cores."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.linebuffer import HEAD, TAIL, LineBuffer


def test_a_line_is_taken_with_its_line_end_once_its_lf_is_here() -> None:
    buf = LineBuffer()
    buf.data += b"EHLO x\r"
    assert buf.line(512) is None and not buf.overlong
    buf.data += b"\nNOOP\nQU"
    assert buf.line(512) == b"EHLO x\r\n"
    assert buf.line(512) == b"NOOP\n"  # a bare LF ends a line too: the core decides what it means
    assert buf.line(512) is None and bytes(buf.data) == b"QU" and len(buf) == 2


def test_the_limit_counts_the_lf() -> None:
    buf = LineBuffer()
    buf.data += b"x" * 9 + b"\n"
    assert buf.line(10) == b"x" * 9 + b"\n"  # ten octets with the LF: allowed
    buf.data += b"x" * 10 + b"\n"
    assert buf.line(10) is None and buf.overlong


def test_an_overlong_line_is_dropped_as_it_arrives_keeping_head_and_tail() -> None:
    buf = LineBuffer()
    buf.data += b"a1 " + b"x" * 600
    assert buf.line(512) is None and buf.overlong
    assert buf.head == (b"a1 " + b"x" * 600)[:HEAD]
    assert not buf.drop_line() and len(buf) == 0  # dropped, not kept
    buf.data += b"y" * 100_000
    assert not buf.drop_line() and len(buf) == 0
    buf.data += b"z" * 10 + b" {12+}\r\nNEXT\r\n"
    assert buf.drop_line() and not buf.overlong
    assert buf.tail == (b"y" * 100 + b"z" * 10 + b" {12+}\r")[-TAIL:]
    assert buf.line(512) == b"NEXT\r\n"


def test_clear_forgets_a_line_being_dropped() -> None:
    buf = LineBuffer()
    buf.data += b"x" * 100
    assert buf.line(50) is None and buf.overlong
    buf.clear()
    assert not buf.overlong and len(buf) == 0
    buf.data += b"after\n"
    assert buf.line(50) == b"after\n"


def _lines(chunks: list[bytes], limit: int) -> tuple[list[bytes], int]:
    """Feed ``chunks``; the lines taken (an over-long one as ``b"!" + head[:4]``) and the most
    octets ever held."""
    buf, out, most = LineBuffer(), [], 0
    for chunk in chunks:
        buf.data += chunk
        most = max(most, len(buf))
        while True:
            if buf.overlong:
                if not buf.drop_line():
                    break
                out.append(b"!" + buf.head[:4])
                continue
            line = buf.line(limit)
            if line is None:
                if buf.overlong:
                    continue
                break
            out.append(line)
    return out, most


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"bb", b"\r", b"\n", b"\r\n", b"x" * 30]), max_size=60), st.data())
def test_chunking_changes_nothing_and_memory_stays_bounded(parts: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(parts)
    limit = 40
    whole, _ = _lines([stream], limit)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    pieces, most = _lines(chunks, limit)
    assert pieces == whole
    assert most <= limit + max((len(c) for c in chunks), default=0)  # a line's worth plus one read
