"""ENVELOPE rendering (RFC 3501 §7.4.2), checked byte for byte and with an IMAP reader."""

from __future__ import annotations

import pytest

from pigeon.store.mime import Headers, envelope, parse_address_list, parse_message
from tests.unit.store.mime.corpus import EIGHT_BIT, RFC3501, crlf
from tests.unit.store.mime.imaptok import parse


def env(header: str, utf8: bool = False) -> bytes:
    return envelope(crlf(header + "\n"), utf8=utf8)


def test_rfc3501_example_exactly() -> None:
    # The ENVELOPE given in RFC 3501 §7.4.2 (FETCH response example), character for character.
    expected = (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")'
        b'("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        b'"<B27397-0100000@cac.washington.edu>")'
    )
    assert envelope(parse_message(RFC3501)) == expected
    assert envelope(RFC3501) == expected  # raw bytes: header parsed alone
    assert envelope(Headers.of_message(RFC3501)) == expected


def test_no_headers_gives_all_nil() -> None:
    assert envelope(b"\r\nbody only\r\n") == b"(" + b" ".join([b"NIL"] * 10) + b")"


def test_empty_fields_are_empty_strings_and_empty_sender_takes_from() -> None:
    out = env("Subject:\nDate: \nFrom: a@b.example\nSender:\nReply-To:   ")
    assert parse(out) == [
        b"",
        b"",
        [[None, None, b"a", b"b.example"]],
        [[None, None, b"a", b"b.example"]],
        [[None, None, b"a", b"b.example"]],
        None, None, None, None, None,
    ]


def test_sender_and_reply_to_kept_when_present() -> None:
    out = parse(env("From: a@x.example\nSender: s@x.example\nReply-To: r@x.example"))
    assert isinstance(out, list)
    assert out[3] == [[None, None, b"s", b"x.example"]]
    assert out[4] == [[None, None, b"r", b"x.example"]]


def test_groups_rfc5322_a13() -> None:
    # RFC 5322 Appendix A.1.3 group syntax, RFC 3501 §7.4.2 group markers.
    out = parse(
        env(
            "From: Pete <pete@silly.example>\n"
            "To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;\n"
            "Cc: Undisclosed recipients:;"
        )
    )
    assert isinstance(out, list)
    assert out[5] == [
        [None, None, b"A Group", None],
        [b"Ed Jones", None, b"c", b"a.test"],
        [None, None, b"joe", b"where.test"],
        [b"John", None, b"jdoe", b"one.test"],
        [None, None, None, None],
    ]
    assert out[6] == [[None, None, b"Undisclosed recipients", None], [None, None, None, None]]


def test_group_exact_bytes() -> None:
    out = env("To: undisclosed-recipients:;")
    assert b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))' in out


def test_unterminated_group_is_closed() -> None:
    addrs = parse_address_list(b"team: a@x.example, b@x.example")
    assert [a.mailbox for a in addrs] == [b"team", b"a", b"b", None]
    assert addrs[-1].host is None


def test_route_quoted_names_comments() -> None:
    addrs = parse_address_list(
        b'"Joe \\"Q\\" Public" <@a.test,@b.test:joe@c.test>, '
        b"Mary Smith (home) <mary@x.test> (ignored), "
        b"jdoe@example.org (John Doe), "
        b'"odd local"@example.net, '
        b"Joe Q. Public <john.q.public@example.com>"
    )
    assert [tuple(a) for a in addrs] == [
        (b'Joe "Q" Public', b"@a.test,@b.test", b"joe", b"c.test"),
        (b"Mary Smith", None, b"mary", b"x.test"),
        (b"John Doe", None, b"jdoe", b"example.org"),
        (None, None, b'"odd local"', b"example.net"),
        (b"Joe Q. Public", None, b"john.q.public", b"example.com"),
    ]
    out = env('To: "Joe \\"Q\\" Public" <joe@c.test>')
    assert b'(("Joe \\"Q\\" Public" NIL "joe" "c.test"))' in out


def test_missing_domain_and_garbage_never_raise() -> None:
    assert [tuple(a) for a in parse_address_list(b"root")] == [(None, None, b"root", b"")]
    assert parse_address_list(b"") == []
    assert parse_address_list(b",,, ;") == []
    for junk in (b"<", b'"unterminated', b"(((", b"a@", b"@", b"<>", b"x:<y", b"\xff\xfe@\x00"):
        parse(envelope(b"From: " + junk + b"\r\nTo: " + junk + b"\r\n\r\n"))


def test_folded_subject_is_unfolded() -> None:
    out = parse(env("Subject: a long\n  subject\n\tline"))
    assert isinstance(out, list)
    assert out[1] == b"a long  subject\tline"


def test_encoded_words_are_left_for_the_client() -> None:
    out = parse(env("Subject: =?utf-8?q?caf=C3=A9?="))
    assert isinstance(out, list)
    assert out[1] == b"=?utf-8?q?caf=C3=A9?="


def test_eight_bit_headers_utf8_accept_quoted_raw() -> None:
    out = envelope(EIGHT_BIT, utf8=True)
    assert '"Grüße aus Köln"'.encode() in out
    assert '(("Jörg Müller" NIL "jörg" "exämple.de"))'.encode() in out
    assert b"{" not in out


def test_eight_bit_headers_legacy_client() -> None:
    out = envelope(EIGHT_BIT, utf8=False)
    parsed = parse(out)
    assert isinstance(parsed, list)
    # Human text: RFC 2047 re-encoded (7-bit, quoted); machine fields: literals of raw bytes.
    assert parsed[1] == b"=?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?="
    frm = parsed[2]
    assert isinstance(frm, list)
    assert frm[0] == [b"=?utf-8?b?SsO2cmcgTcO8bGxlcg==?=", None, "jörg".encode(), "exämple.de".encode()]
    assert b"{5}\r\nj\xc3\xb6rg" in out
    assert out.isascii() is False  # literals carry the raw bytes


def test_invalid_utf8_becomes_literal_in_both_modes() -> None:
    raw = b"Subject: caf\xe9\r\n\r\n"
    for utf8 in (False, True):
        out = envelope(raw, utf8=utf8)
        assert b"{4}\r\ncaf\xe9" in out
        parsed = parse(out)
        assert isinstance(parsed, list) and parsed[1] == b"caf\xe9"


def test_controls_in_values() -> None:
    out = envelope(b"Subject: a\x00b\rc\r\nMessage-ID: <x\"y\\z@h>\r\n\r\n")
    parsed = parse(out)
    assert isinstance(parsed, list)
    assert parsed[1] == b"ab\rc"  # NUL removed (CHAR8 excludes it); bare CR needs a literal
    assert b"{4}\r\nab\rc" in out
    assert parsed[9] == b'<x"y\\z@h>'
    assert b'"<x\\"y\\\\z@h>"' in out


@pytest.mark.parametrize("field", ["From", "to", "CC", "bcc"])
def test_field_names_case_insensitive(field: str) -> None:
    parsed = parse(env(f"{field}: x@y.example"))
    assert isinstance(parsed, list)
    assert [[None, None, b"x", b"y.example"]] in parsed


def test_first_occurrence_wins() -> None:
    parsed = parse(env("Subject: one\nSubject: two"))
    assert isinstance(parsed, list) and parsed[1] == b"one"


@pytest.mark.parametrize(
    "value",
    [
        b"a@b.example",
        b"  a.b+c@d-e.example\t",
        b"Joe <j@x.example>",
        b"Joe  \t Q Public <j@x.example>",
        b'"Q, R" <q@r.example>',
        b'"" <q@r.example>',
        b"<q@r.example>",
        b'"a  b" <x@y.example>',
        b"Terry Gray <gray@cac.washington.edu>",
        "Jörg Müller <jörg@exämple.de>".encode(),
        "jörg@exämple.de".encode(),
    ],
)
def test_fast_path_agrees_with_general_parser(value: bytes) -> None:
    from pigeon.store.mime.addresses import _fast, _parse_general

    assert _fast(value) is not None
    assert _fast(value) == _parse_general(value)


@pytest.mark.parametrize(
    "value",
    [
        b"a@b.example, Joe <j@x.example>,c@d.example",
        b"a@b.example,, ,c@d.example",
        b"a@b.example, Joe Q. Public <j@x.example>",  # not a fast piece: general parser
        b"minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>",
    ],
)
def test_comma_list_fast_path_agrees_with_general_parser(value: bytes) -> None:
    from pigeon.store.mime.addresses import _parse_general

    assert parse_address_list(value) == _parse_general(value)
