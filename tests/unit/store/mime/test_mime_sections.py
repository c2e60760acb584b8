"""BODY[section] and BINARY[section] (RFC 3501 §6.4.5, RFC 3516 §4.2)."""

from __future__ import annotations

import pytest

from pigeon.store.mime import NoSuchPart, binary, binary_size, find_part, parse_message, partial, section
from tests.unit.store.mime.corpus import MIXED, NESTED, RFC3501, SIMPLE, crlf


def _leaf(ctype: str, label: str) -> str:
    return f"Content-Type: {ctype}\n\nbody {label}"


def _multi(boundary: str, subtype: str, *parts: str) -> str:
    inner = "".join(f"--{boundary}\n{p}\n" for p in parts)
    return f"Content-Type: multipart/{subtype}; boundary={boundary}\n\n{inner}--{boundary}--"


def _message(label: str, body: str) -> str:
    return f"Content-Type: message/rfc822\n\nSubject: {label}\n{body}"


# The example structure of RFC 3501 §6.4.5, each leaf body naming its own part number.
RFC3501_SECTIONS = crlf(
    "Subject: top\n"
    + _multi(
        "t",
        "mixed",
        _leaf("text/plain", "1"),
        _leaf("application/octet-stream", "2"),
        _message("m3", _multi("m3", "mixed", _leaf("text/plain", "3.1"), _leaf("application/octet-stream", "3.2"))),
        _multi(
            "p4",
            "mixed",
            _leaf("image/gif", "4.1"),
            _message(
                "m42",
                _multi(
                    "m42",
                    "mixed",
                    _leaf("text/plain", "4.2.1"),
                    _multi("a", "alternative", _leaf("text/plain", "4.2.2.1"), _leaf("text/richtext", "4.2.2.2")),
                ),
            ),
        ),
    )
    + "\n"
)


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ((1,), "text/plain"),
        ((2,), "application/octet-stream"),
        ((3,), "message/rfc822"),
        ((3, 1), "text/plain"),
        ((3, 2), "application/octet-stream"),
        ((4,), "multipart/mixed"),
        ((4, 1), "image/gif"),
        ((4, 2), "message/rfc822"),
        ((4, 2, 1), "text/plain"),
        ((4, 2, 2), "multipart/alternative"),
        ((4, 2, 2, 1), "text/plain"),
        ((4, 2, 2, 2), "text/richtext"),
    ],
)
def test_rfc3501_part_numbering(path: tuple[int, ...], ctype: str) -> None:
    msg = parse_message(RFC3501_SECTIONS)
    part = find_part(msg, path)
    assert part is not None and f"{part.type}/{part.subtype}" == ctype
    if not part.is_multipart and part.message is None:
        assert section(msg, path) == b"body " + ".".join(map(str, path)).encode()


def test_rfc3501_header_text_mime() -> None:
    msg = parse_message(RFC3501_SECTIONS)
    assert section(msg, (), "HEADER") == b"Subject: top\r\nContent-Type: multipart/mixed; boundary=t\r\n\r\n"
    assert section(msg, (3,), "HEADER") == b"Subject: m3\r\nContent-Type: multipart/mixed; boundary=m3\r\n\r\n"
    text = section(msg, (3,), "TEXT")
    assert text is not None and text.startswith(b"--m3\r\n") and text.endswith(b"--m3--")
    assert section(msg, (4, 2), "HEADER") == b"Subject: m42\r\nContent-Type: multipart/mixed; boundary=m42\r\n\r\n"
    assert section(msg, (4, 1), "MIME") == b"Content-Type: image/gif\r\n\r\n"
    assert section(msg, (3,), "MIME") == b"Content-Type: message/rfc822\r\n\r\n"
    assert section(msg, (4, 2, 2, 2), "MIME") == b"Content-Type: text/richtext\r\n\r\n"
    whole = section(msg, (3,))
    assert whole is not None and whole.startswith(b"Subject: m3\r\n")


def test_header_plus_text_is_the_message() -> None:
    for raw in (RFC3501, MIXED, NESTED, RFC3501_SECTIONS, b"no header at all"):
        msg = parse_message(raw)
        assert section(msg) == raw
        head, text = section(msg, (), "HEADER"), section(msg, (), "TEXT")
        assert head is not None and text is not None and head + text == raw


def test_non_multipart_has_only_part_one() -> None:
    msg = parse_message(SIMPLE)
    assert section(msg, (1,)) == b"line one\r\nline two\r\n"
    assert section(msg, (1,), "MIME") == b"From: a@example.com\r\nSubject: hi\r\n\r\n"
    assert section(msg, (2,)) is None
    assert section(msg, (0,)) is None
    assert section(msg, (1, 1)) is None
    assert section(msg, (1,), "HEADER") is None  # part 1 is not message/rfc822
    assert section(msg, (1,), "TEXT") is None


def test_top_level_message_rfc822() -> None:
    raw = crlf("Content-Type: message/rfc822\n\nSubject: wrapped\n\nwrapped body\n")
    msg = parse_message(raw)
    assert section(msg, (1,), "HEADER") == b"Subject: wrapped\r\n\r\n"
    assert section(msg, (1, 1)) == b"wrapped body\r\n"


def test_header_fields() -> None:
    raw = crlf("Subject: s\nX-Folded: a\n b\nFrom: f@x\nsubject: again\nTo: t@x\n\nbody\n")
    msg = parse_message(raw)
    # Kept in message order, as written (folds included), with the blank line (RFC 3501 §6.4.5).
    assert section(msg, (), "HEADER.FIELDS", ("SUBJECT", "x-folded")) == (
        b"Subject: s\r\nX-Folded: a\r\n b\r\nsubject: again\r\n\r\n"
    )
    assert section(msg, (), "HEADER.FIELDS.NOT", ("subject", "X-FOLDED")) == b"From: f@x\r\nTo: t@x\r\n\r\n"
    assert section(msg, (), "HEADER.FIELDS", ("absent",)) == b"\r\n"
    assert section(parse_message(b"Subject: x"), (), "HEADER.FIELDS", ("subject",)) == b"Subject: x\r\n\r\n"
    nested = parse_message(NESTED)
    assert section(nested, (2,), "HEADER.FIELDS", ("subject",)) == b"Subject: inner\r\n\r\n"


def test_mime_needs_a_part_number() -> None:
    with pytest.raises(ValueError):
        section(parse_message(SIMPLE), (), "MIME")


def test_partial() -> None:
    assert partial(b"0123456789", 2, 3) == b"234"
    assert partial(b"0123456789", 8, 10) == b"89"
    assert partial(b"0123456789", 20, 5) == b""
    with pytest.raises(ValueError):
        partial(b"x", -1, 1)


def test_binary() -> None:
    mixed = parse_message(MIXED)
    assert binary(mixed, (2,)) == b"hello world\n"
    assert binary_size(mixed, (2,)) == 12
    assert binary(mixed, (1,)) == b"see attached"
    assert binary(mixed) == MIXED
    nested = parse_message(NESTED)
    assert binary(nested, (3,)) is None  # x-uuencode: NO [UNKNOWN-CTE] (RFC 3516 §4.3)
    assert binary_size(nested, (3,)) is None
    with pytest.raises(NoSuchPart):
        binary(nested, (9,))
    qp = parse_message(crlf("Content-Transfer-Encoding: Quoted-Printable\n\ncaf=C3=A9 =\nau lait\n"))
    assert binary(qp, (1,)) == "café au lait\r\n".encode()
