"""The part tree: spans, defaults, boundaries, malformed input (RFC 2045/2046, RFC 2231)."""

from __future__ import annotations

import random

import pytest

from pigeon.store.mime import Headers, decode_words, find_part, parse_message
from pigeon.store.mime.decode import decode_charset, decode_cte
from pigeon.store.mime.headers import find_body_start
from pigeon.store.mime.params import parse_content_type, parse_params, param_text
from tests.unit.store.mime.corpus import ALTERNATIVE, NESTED, RFC2231, SIMPLE, crlf


def test_simple_spans() -> None:
    msg = parse_message(SIMPLE)
    assert msg.header == b"From: a@example.com\r\nSubject: hi\r\n\r\n"
    assert msg.body == b"line one\r\nline two\r\n"
    assert (msg.root.type, msg.root.subtype, msg.root.cte) == ("text", "plain", "7bit")
    assert msg.root.lines == 2 and msg.root.size == 20


def test_alternative_children_exclude_the_crlf_before_delimiters() -> None:
    root = parse_message(ALTERNATIVE).root
    assert root.is_multipart and len(root.children) == 2
    plain, html = root.children
    assert plain.body == b"plain body"
    assert plain.header == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert html.body == b"<p>caf=C3=A9</p>"
    assert html.param("charset") == "utf-8"


def test_nested_message() -> None:
    root = parse_message(NESTED).root
    intro, fwd, blob = root.children
    assert intro.header == b"\r\n" and intro.body == b"intro"
    assert fwd.message is not None
    inner = fwd.message
    assert inner.headers.get("subject") == b"inner"
    assert [c.body for c in inner.root.children] == [b"inner text", b"<b>inner</b>"]
    assert blob.cte == "x-uuencode"


def test_rfc2231_decoding() -> None:
    part = parse_message(RFC2231).root.children[0]
    assert part.param("name") == "€ rates.pdf"
    assert part.filename == "£ prices.pdf"
    assert part.language == (b"en", b"fr")
    assert part.location == b"http://example.com/x.pdf"


def test_params_edge_cases() -> None:
    assert parse_content_type(b"Text/HTML ; Charset = \"UTF-8\" (comment); format=flowed") == (
        "text",
        "html",
        (("charset", b"UTF-8"), ("format", b"flowed")),
    )
    # Unquoted values with "=" and "/" (real-world boundaries), junk, duplicates (first wins).
    assert parse_params(b"; boundary=----=_Part_1/2; junk; x=1; x=2; =v; y=\"a\\\"b\"") == (
        ("boundary", b"----=_Part_1/2"),
        ("x", b"1"),
        ("y", b'a"b'),
    )
    # A gap in continuations ends the value (RFC 2231 §3); plain and extended both reported.
    params = parse_params(b"; t*0=a; t*1=b; t*3=d; n=plain; n*=utf-8''%C3%A9")
    assert params == (("t", b"ab"), ("n", b"plain"), ("n*", b"utf-8''%C3%A9"))
    assert param_text(params, "n") == "é"
    assert param_text(parse_params(b'; name="=?utf-8?q?r=C3=A9sum=C3=A9?=.pdf"'), "name") == "résumé.pdf"
    assert parse_content_type(b"text") is None
    assert parse_content_type(b"/plain") is None
    assert parse_content_type(b"") is None


def test_invalid_content_type_defaults_to_text_plain() -> None:
    part = parse_message(crlf("Content-Type: garbage\n\nx")).root
    assert (part.type, part.subtype, part.params) == ("text", "plain", (("charset", b"us-ascii"),))


def test_text_without_charset_reports_us_ascii() -> None:
    part = parse_message(crlf("Content-Type: text/html; format=flowed\n\nx")).root
    assert part.params == (("format", b"flowed"), ("charset", b"us-ascii"))


def test_header_block_rules() -> None:
    assert find_body_start(b"A: b\r\n\r\nbody", 0, 12) == 8
    assert find_body_start(b"A: b\n\nbody", 0, 10) == 6  # bare LF
    assert find_body_start(b"A: b\n\r\nbody", 0, 11) == 7
    assert find_body_start(b"\r\nbody", 0, 6) == 2  # empty header
    assert find_body_start(b"A: b\r\nB: c", 0, 10) == 10  # no separator: all header
    h = Headers(b"From foo Sat Jan  1\r\nX-A: 1\r\n garbage line\r\nbroken\r\nX-B:2\r\n  folded\r\n\r\n")
    assert [f.name for f in h.fields] == ["x-a", "x-b"]
    assert h.get("X-B") == b"2  folded"
    assert h.get("x-a") == b"1 garbage line"
    assert h.get("missing") is None


def test_bare_lf_message() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\nhi\nthere\n--q--\n"
    root = parse_message(raw).root
    assert len(root.children) == 1
    assert root.children[0].body == b"hi\nthere"
    assert root.children[0].lines == 2


def test_no_separator_is_all_header() -> None:
    msg = parse_message(b"Subject: only a header\r\nFrom: x@y")
    assert msg.body == b"" and msg.headers.get("from") == b"x@y"


def test_missing_close_delimiter_and_boundary_prefix() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=ab\n\n"
        "--ab\n\none\n--abc not a delimiter\n--ab \t\n\ntwo\n"
    )
    root = parse_message(raw).root
    assert [c.body for c in root.children] == [b"one\r\n--abc not a delimiter", b"two\r\n"]


def test_empty_parts() -> None:
    # The line break before a delimiter belongs to it (RFC 2046 §5.1.1), so "--e CRLF CRLF --e"
    # encloses an empty part, and only a second empty line makes an (empty) header.
    raw = crlf("Content-Type: multipart/mixed; boundary=e\n\n--e\n--e\n\n--e\n\n\n--e--")
    root = parse_message(raw).root
    assert [(c.header, c.body) for c in root.children] == [(b"", b""), (b"", b""), (b"\r\n", b"")]


def test_lines_counts_an_unterminated_last_line() -> None:
    assert parse_message(b"\r\na\r\nb").root.lines == 2
    assert parse_message(b"\r\n").root.lines == 0


def test_encoded_words() -> None:
    assert decode_words(b"=?utf-8?q?caf=C3=A9?= =?utf-8?q?_au?=  lait") == "café au  lait"
    # A UTF-8 character split across two adjacent B words survives (RFC 2047 §6.2 joining).
    assert decode_words(b"=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=") == "éé"
    assert decode_words(b"=?iso-8859-1*fr?Q?Andr=E9?=") == "André"
    assert decode_words(b"=?unknown-cs?q?x?= a =?bad") == "x a =?bad"
    assert decode_words("Grüße".encode()) == "Grüße"
    assert decode_words(b"caf\xe9") == "café"  # not UTF-8: Latin-1


def test_cte_and_charset_decoding() -> None:
    assert decode_cte(b"aGVs\r\nbG8", "BASE64") == b"hello"  # missing padding repaired
    assert decode_cte(b"aGVsbG8=!!", "base64") == b"hello"
    assert decode_cte(b"caf=C3=A9=\r\n  \r\nx", "quoted-printable") == b"caf\xc3\xa9\r\nx"
    assert decode_cte(b"raw", "8bit") == b"raw"
    assert decode_cte(b"raw", "x-uuencode") is None
    assert decode_charset(b"caf\xe9", "iso-8859-1") == "café"
    assert decode_charset("café".encode(), "us-ascii") == "café"
    assert decode_charset(b"x\xff", "no-such-charset") == "x\ufffd"


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1234)
    alphabet = [b"--b", b"\r\n", b"\n", b"Content-Type: multipart/mixed; boundary=b", b"\r\n\r\n",
                b"Content-Type: message/rfc822", b":", b" ", b"x", b"\xff", b"--b--", b"=?", b"\""]
    from pigeon.store.mime import bodystructure, envelope, section
    from tests.unit.store.mime.imaptok import parse

    for _ in range(300):
        raw = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        msg = parse_message(raw)
        parse(bodystructure(msg))
        parse(envelope(msg))
        assert section(msg) == raw


@pytest.mark.parametrize("count", [3, 50])
def test_many_parts(count: int) -> None:
    body = "".join(f"--p\n\npart {i}\n" for i in range(count))
    root = parse_message(crlf(f"Content-Type: multipart/mixed; boundary=p\n\n{body}--p--\n")).root
    assert [c.body for c in root.children] == [f"part {i}".encode() for i in range(count)]


def test_deep_message_rfc822_nesting_is_bounded() -> None:
    from pigeon.store.mime import MAX_NESTING, body_contains, bodystructure, section
    from tests.unit.store.mime.imaptok import parse

    depth = MAX_NESTING + 30
    raw = crlf("Content-Type: message/rfc822\n\n" * depth + "Subject: leaf\n\ndeep text\n")
    msg = parse_message(raw)
    parse(bodystructure(msg))
    # Part 1 is the root (depth 0); each further ".1" goes one message deeper.
    deepest = find_part(msg, (1,) * (MAX_NESTING + 1))
    assert deepest is not None and deepest.opaque and deepest.message is None
    assert section(msg, (1,) * (MAX_NESTING + 2)) is None  # the opaque part has no sub-parts
    assert not body_contains(msg, "deep text")  # beyond the limit: opaque, not searched


def test_total_parts_limit() -> None:
    from pigeon.store.mime import MAX_PARTS

    count = MAX_PARTS + 50
    raw = b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + b"--p\r\n\r\nx\r\n" * count + b"--p--\r\n"
    root = parse_message(raw).root
    assert len(root.children) == MAX_PARTS - 1  # the root counts as one part
