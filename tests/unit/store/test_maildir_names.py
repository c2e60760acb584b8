"""Mailbox directory names from addresses, unique names, size fields (pigeon.store.names)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pigeon.core.address import Address, parse_address
from pigeon.store.names import (
    NAME_MAX,
    MailboxNameError,
    UniqueNames,
    decode_component,
    encode_component,
    encode_hostname,
    final_name,
    mailbox_components,
    parse_sizes,
)

_SAFE_NAME = re.compile(r"^[a-z0-9_+=%-][a-z0-9._+=%A-F-]*$")


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("bob", "bob"),
        ("first.last+tag=x_y-z", "first.last+tag=x_y-z"),
        ("../x", "%2E.%2Fx"),
        ("..", "%2E."),
        (".", "%2E"),
        (".hidden", "%2Ehidden"),
        ("a/b", "a%2Fb"),
        ('"a b"', "%22a%20b%22"),
        ("100%", "100%25"),
        ("nul\x00byte", "nul%00byte"),
        ("jürgen", "j%C3%BCrgen"),
        ("a\\b", "a%5Cb"),
    ],
)
def test_encode_component_table(text: str, encoded: str) -> None:
    assert encode_component(text) == encoded
    assert decode_component(encoded) == text


def test_empty_component_is_refused() -> None:
    with pytest.raises(MailboxNameError):
        encode_component("")


def test_overlong_component_is_refused() -> None:
    assert len(encode_component("a" * NAME_MAX)) == NAME_MAX
    with pytest.raises(MailboxNameError):
        encode_component("a" * (NAME_MAX + 1))
    with pytest.raises(MailboxNameError):
        encode_component("/" * 100)  # 300 octets once encoded


# 16 characters are at most 64 UTF-8 octets: the RFC 5321 §4.5.3.1.1 local-part limit.
@given(st.text(min_size=1, max_size=16))
def test_any_text_encodes_to_one_safe_component(text: str) -> None:
    enc = encode_component(text)
    assert _SAFE_NAME.match(enc), enc
    assert enc not in (".", "..")
    assert "/" not in enc and "\x00" not in enc
    assert decode_component(enc) == text


@given(st.text(min_size=1, max_size=16), st.text(min_size=1, max_size=16))
def test_encoding_is_injective(a: str, b: str) -> None:
    if a != b:
        assert encode_component(a) != encode_component(b)


def test_components_come_from_the_folded_address() -> None:
    assert mailbox_components(Address("Bob", "Example.COM")) == ("example.com", "bob")
    assert mailbox_components(parse_address("Bob@EXAMPLE.com")) == ("example.com", "bob")
    # A quoted local part may hold "@"; the domain is what follows the last "@".
    assert mailbox_components(parse_address('"a@b"@example.com')) == ("example.com", "%22a%40b%22")
    assert mailbox_components(parse_address("x@[192.0.2.1]")) == ("%5B192.0.2.1%5D", "x")


def test_hostname_is_escaped_as_the_maildir_spec_says() -> None:
    assert encode_hostname("mx.example.com") == "mx.example.com"
    assert encode_hostname("a/b:c") == "a\\057b\\072c"
    assert encode_hostname("a,b") == "a\\054b"
    assert encode_hostname("") == "localhost"


def test_unique_names_have_the_dovecot_form_and_differ() -> None:
    names = UniqueNames("mail/host:1")
    got = [names.next() for _ in range(1000)]
    assert len(set(got)) == 1000
    pattern = re.compile(rf"^\d+\.M\d+P{os.getpid()}Q\d+\.mail\\057host\\0721$")
    assert all(pattern.match(n) for n in got), got[0]


def test_final_name_and_parse_sizes_round_trip() -> None:
    name = final_name("1700000000.M1P2Q3.host", 120, 125)
    assert name == "1700000000.M1P2Q3.host,S=120,W=125"
    assert parse_sizes(name) == (120, 125)
    assert parse_sizes(name + ":2,S") == (120, 125)
    assert parse_sizes("1700000000.M1P2Q3.host") == (None, None)
