"""Mail addresses as values (pigeon.core.address): the RFC 5321 §4.1.2 Mailbox syntax and limits."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pigeon.core.address import (
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    MAX_PATH,
    Address,
    AddressError,
    format_path,
    is_valid_domain,
    parse_address,
)


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("bob@example.com", "bob", "example.com"),
        ("Bob.Smith@EXAMPLE.Com", "Bob.Smith", "example.com"),  # rule 1: domain folded, local kept
        ("a+tag@mail.example.org", "a+tag", "mail.example.org"),
        ("!#$%&'*+/=?^_`{|}~-@x.org", "!#$%&'*+/=?^_`{|}~-", "x.org"),  # every atext character
        ('"a b"@x.org', '"a b"', "x.org"),  # quoted-string local part
        ('"a@b"@x.org', '"a@b"', "x.org"),  # the last @ separates: an @ inside quotes is local
        ('"a\\"b"@x.org', '"a\\"b"', "x.org"),  # quoted-pair
        ('""@x.org', '""', "x.org"),  # an empty quoted string is syntactically a local part
        ("a@[192.0.2.1]", "a", "[192.0.2.1]"),  # address literals (RFC 5321 §4.1.3)
        ("a@[IPv6:2001:DB8::1]", "a", "[IPv6:2001:DB8::1]"),  # literals keep their case
        ("a@123.example", "a", "123.example"),
    ],
)
def test_valid_mailboxes(text: str, local: str, domain: str) -> None:
    assert parse_address(text) == Address(local, domain)


@pytest.mark.parametrize(
    "text",
    [
        "", "bob", "@", "@example.com", "bob@", "bob@@example.com",  # no local part or no domain
        ".bob@x.org", "bob.@x.org", "b..ob@x.org",  # dot-string: no leading, trailing or double dot
        "bo b@x.org", "bo(b@x.org", "bo\\b@x.org", 'bo"b@x.org',  # specials outside quotes
        '"unterminated@x.org', '"a"b"@x.org', '"tab\there"@x.org',  # bad quoted strings
        "bob@x..org", "bob@.x.org", "bob@x.org.", "bob@-x.org", "bob@x-.org", "bob@x_y.org",
        "bob@[192.0.2.256]", "bob@[192.0.2]", "bob@[IPv6:zz::1]", "bob@[foo]", "bob@192.0.2.1]",
        "<bob@x.org>",  # the path's angle brackets are not part of the address
        "jürgen@example.org", "bob@exämple.org",  # UTF-8 needs utf8=True (SMTPUTF8)
    ],
)
def test_invalid_mailboxes_raise_address_error(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_address_error_is_a_value_error() -> None:
    assert issubclass(AddressError, ValueError)  # callers that catch ValueError see it too


def test_utf8_addresses_only_with_smtputf8() -> None:  # rule 3, RFC 6531
    a = parse_address("jürgen@Exämple.ORG", utf8=True)
    assert a == Address("jürgen", "exämple.org") and a.is_utf8
    assert not parse_address("bob@example.org").is_utf8
    assert parse_address('"ü x"@example.org', utf8=True).local == '"ü x"'
    with pytest.raises(AddressError):
        parse_address('"ü x"@example.org')


def test_limits_count_octets() -> None:  # rule 4: RFC 5321 §4.5.3.1
    assert parse_address("a" * MAX_LOCAL_PART + "@x.org").local == "a" * 64
    with pytest.raises(AddressError, match="local part too long"):
        parse_address("a" * (MAX_LOCAL_PART + 1) + "@x.org")
    with pytest.raises(AddressError, match="local part too long"):
        parse_address("ü" * 33 + "@x.org", utf8=True)  # 33 characters, 66 octets
    label = "b" * 63
    assert parse_address(f"a@{label}.org")
    with pytest.raises(AddressError):
        parse_address(f"a@{label}b.org")  # a label of 64 octets (RFC 1035 §2.3.4)
    domain = ".".join(["c" * 63] * 3 + ["d" * 61])  # 253 octets
    assert len(domain) <= MAX_DOMAIN and parse_address(f"a@{domain}").domain == domain
    with pytest.raises(AddressError, match="address too long"):
        parse_address("a" * 64 + "@" + "x" * 100 + "." + "y" * 100)  # 266 > MAX_PATH
    assert MAX_PATH == 256


def test_domain_validation() -> None:
    assert is_valid_domain("example.org") and is_valid_domain("[192.0.2.1]")
    assert is_valid_domain("[IPv6:::1]") and not is_valid_domain("[IPv6:1:2:3]")
    assert not is_valid_domain("") and not is_valid_domain("x" * 256)
    assert not is_valid_domain("exämple.org") and is_valid_domain("exämple.org", utf8=True)


def test_key_folds_the_whole_address_and_unquoted_local_strips_quoting() -> None:
    a = parse_address('"John \\"JJ\\" Doe"@Example.org')
    assert a.key == '"john \\"jj\\" doe"@example.org'
    assert a.unquoted_local == 'John "JJ" Doe'
    assert parse_address("Bob@x.org").key == "bob@x.org"
    assert parse_address("Bob@x.org").unquoted_local == "Bob"


def test_addresses_are_frozen_values() -> None:
    a = Address("bob", "x.org")
    assert a == Address("bob", "x.org") and hash(a) == hash(Address("bob", "x.org"))
    assert str(a) == "bob@x.org"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.local = "eve"  # type: ignore[misc]


def test_format_path() -> None:  # rule 2: the null reverse path is None
    assert format_path(None) == "<>"
    assert format_path(Address("bob", "x.org")) == "<bob@x.org>"


@given(st.text(max_size=300))
def test_parse_address_never_fails_otherwise(text: str) -> None:
    """Whatever the text: an Address that prints back to a parseable form, or AddressError."""
    for utf8 in (False, True):
        try:
            a = parse_address(text, utf8=utf8)
        except AddressError:
            continue
        assert parse_address(str(a), utf8=utf8) == a
