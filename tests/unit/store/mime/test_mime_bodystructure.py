"""BODY / BODYSTRUCTURE rendering (RFC 3501 §7.4.2, §9 grammar), byte for byte."""

from __future__ import annotations

from pigeon.store.mime import MAX_NESTING, bodystructure, parse_message
from tests.unit.store.mime.corpus import ALTERNATIVE, MIXED, NESTED, RFC2231, RFC3501, SIMPLE, crlf
from tests.unit.store.mime.imaptok import parse


def both(raw: bytes) -> tuple[bytes, bytes]:
    msg = parse_message(raw)
    return bodystructure(msg, extensible=False), bodystructure(msg)


def test_simple_text() -> None:
    body, bs = both(RFC3501)
    # "hello\r\nworld\r\n": 14 octets, 2 lines; charset value kept as written.
    assert body == b'("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 14 2)'
    assert bs == b'("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 14 2 NIL NIL NIL NIL)'


def test_missing_content_type_defaults_to_us_ascii_text() -> None:
    body, _ = both(SIMPLE)  # "line one\r\nline two\r\n" = 20 octets, 2 lines
    assert body == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 20 2)'


def test_rfc3501_body_example_shape() -> None:
    # RFC 3501 §7.4.2 BODY example: (("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)
    # ("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>"
    # "Compiser" "BASE64" 4554 73) "MIXED"); our bodies are "see attached" (12 octets, 1 line) and
    # "aGVsbG8gd29y\r\nbGQK" (18 octets, 2 lines).
    body, bs = both(MIXED)
    assert body == (
        b'(("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 12 1)'
        b'("text" "plain" ("charset" "US-ASCII" "name" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiser" "base64" 18 2) "mixed")'
    )
    assert bs == (
        b'(("text" "plain" ("charset" "US-ASCII") NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
        b'("text" "plain" ("charset" "US-ASCII" "name" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiser" "base64" 18 2 '
        b'NIL ("attachment" ("filename" "cc.diff")) NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)'
    )
    assert body.lower() == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 12 1)("TEXT" "PLAIN" '
        b'("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" '
        b'"Compiser" "BASE64" 18 2) "MIXED")'
    ).lower()


def test_alternative() -> None:
    _, bs = both(ALTERNATIVE)
    assert bs == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 10 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "quoted-printable" 16 1 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "XX") NIL NIL NIL)'
    )


def test_nested_message_rfc822() -> None:
    body, bs = both(NESTED)
    inner = (
        b"From: inner@example.org\r\nSubject: inner\r\n"
        b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
        b"--inner\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
        b"--inner\r\nContent-Type: text/html\r\n\r\n<b>inner</b>\r\n--inner--"
    )
    assert body == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 1)'
        b'("message" "rfc822" NIL NIL NIL "7bit" %d '
        b'(NIL "inner" ((NIL NIL "inner" "example.org")) ((NIL NIL "inner" "example.org")) '
        b'((NIL NIL "inner" "example.org")) NIL NIL NIL NIL NIL) '
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 1)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 12 1) "alternative") %d)'
        b'("application" "octet-stream" NIL NIL NIL "x-uuencode" 11) "mixed")'
    ) % (len(inner), inner.count(b"\n") + 1)
    tree = parse(bs)
    assert isinstance(tree, list)
    msg_part = tree[1]
    assert isinstance(msg_part, list)
    # Extension data of the embedded body is present too in BODYSTRUCTURE.
    embedded = msg_part[8]
    assert isinstance(embedded, list) and embedded[2] == b"alternative" and embedded[3] == [b"boundary", b"inner"]


def test_rfc2231_parameters_merged_as_dovecot_does() -> None:
    _, bs = both(RFC2231)
    assert bs == (
        b'(("application" "pdf" ("name*" "utf-8\'\'%E2%82%AC%20rates.pdf") NIL NIL "base64" 8 '
        b'NIL ("attachment" ("filename*" "iso-8859-1\'en\'%A3%20prices.pdf")) ("en" "fr") '
        b'"http://example.com/x.pdf") "mixed" ("boundary" "=_b") NIL NIL NIL)'
    )


def test_digest_default_is_message_rfc822() -> None:
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n"
        "--d\n\nSubject: one\n\nbody one\n"
        "--d\nContent-Type: text/plain\n\nplain\n"
        "--d--\n"
    )
    tree = parse(bodystructure(parse_message(raw), extensible=False))
    assert isinstance(tree, list)
    first, second = tree[0], tree[1]
    assert isinstance(first, list) and first[:2] == [b"message", b"rfc822"]
    assert isinstance(second, list) and second[:2] == [b"text", b"plain"]
    assert tree[2] == b"digest"


def test_multipart_without_parts_gets_empty_text_child() -> None:
    for raw in (
        crlf("Content-Type: multipart/mixed\n\nno boundary param\n"),
        crlf("Content-Type: multipart/mixed; boundary=zz\n\nno delimiter at all\n"),
    ):
        assert bodystructure(parse_message(raw), extensible=False) == (
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")'
        )


def test_deep_nesting_is_cut_at_the_limit() -> None:
    depth = MAX_NESTING + 50
    head = "".join(f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(depth))
    tail = "".join(f"\n--b{i}--" for i in reversed(range(depth)))
    raw = crlf(f"Content-Type: multipart/mixed; boundary=b0\n\n{head}--b{depth}\n\nleaf{tail}\n")
    msg = parse_message(raw)
    out = bodystructure(msg)
    tree = parse(out)
    levels = 0
    node = tree
    while isinstance(node, list) and isinstance(node[0], list):
        node = node[0]
        levels += 1
    assert levels == MAX_NESTING  # the part at depth MAX_NESTING is opaque
    assert isinstance(node, list) and node[:2] == [b"application", b"octet-stream"]


def test_base64_message_rfc822_is_opaque() -> None:
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=m\n\n--m\n"
        "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeA0KDQp4\n--m--\n"
    )
    tree = parse(bodystructure(parse_message(raw), extensible=False))
    assert isinstance(tree, list)
    assert tree[0] == [b"application", b"octet-stream", None, None, None, b"base64", 20]


def test_eight_bit_parameters_and_description() -> None:
    raw = (
        b'Content-Type: text/plain; charset=utf-8; name="r\xc3\xa9sum\xc3\xa9.txt"\r\n'
        b"Content-Description: caf\xc3\xa9\r\n\r\nx"
    )
    legacy = bodystructure(parse_message(raw))
    assert b'{12}\r\nr\xc3\xa9sum\xc3\xa9.txt' in legacy
    assert b'"=?utf-8?b?Y2Fmw6k=?="' in legacy
    modern = bodystructure(parse_message(raw), utf8=True)
    assert b'"r\xc3\xa9sum\xc3\xa9.txt"' in modern and b'"caf\xc3\xa9"' in modern
    parse(legacy)
    parse(modern)


def test_every_corpus_message_parses_as_imap() -> None:
    from tests.unit.store.mime import corpus

    for name in dir(corpus):
        raw = getattr(corpus, name)
        if isinstance(raw, bytes):
            msg = parse_message(raw)
            for ext in (False, True):
                for utf8 in (False, True):
                    assert isinstance(parse(bodystructure(msg, ext, utf8)), list), name
