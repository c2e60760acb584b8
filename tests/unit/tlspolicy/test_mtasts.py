"""MTA-STS values (RFC 8461 §3.1, §3.2, §4.1): the TXT record, the policy file, the MX match."""

from __future__ import annotations

import pytest

from pigeon.delivery.tlspolicy.mtasts import (
    MAX_AGE_LIMIT,
    MAX_POLICY_BYTES,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_txt,
)


def test_txt_record() -> None:
    assert parse_txt(["v=spf1 -all", "v=STSv1; id=20261207T01;"]).id == "20261207T01"  # type: ignore[union-attr]
    assert parse_txt(["v=spf1 -all"]) is None
    assert parse_txt([]) is None
    with pytest.raises(PolicyError, match="exactly one"):
        parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"])
    for bad in ["v=STSv1;", "v=STSv1; id=has-dash", "v=STSv1; id=" + "a" * 33, "v=STSv1; id", "v=STSv1 id=1"]:
        with pytest.raises(PolicyError):
            parse_txt([bad])
    with pytest.raises(PolicyError, match="too long"):
        parse_txt(["v=STSv1; id=1; x=" + "y" * 5000])


def test_policy_file() -> None:
    p = parse_policy(b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
                     b"max_age: 604800\r\nextension: ignored\r\n")
    assert (p.mode, p.max_age, p.mx) == ("enforce", 604800, ("mail.example.com", "*.example.net"))
    assert p.permits("MAIL.example.com.") and p.permits("mx1.example.net") and not p.permits("example.net")
    with pytest.raises(PolicyError, match="max_age"):
        parse_policy(b"version: STSv1\nmode: none\nmax_age: 99999999999\n")  # 11 digits: bad input
    assert parse_policy(b"version: STSv1\nmode: testing\nmx: a.b\nmax_age: 99999999\n").max_age == MAX_AGE_LIMIT
    assert parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n").mx == ()
    assert parse_policy(parse_policy(b"version: STSv1\nmode: testing\nmx: a.b\nmax_age: 5\n").to_text().encode()).mx == ("a.b",)


@pytest.mark.parametrize("body, why", [
    (b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", "version"),
    (b"version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", "mode"),
    (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
    (b"version: STSv1\nmode: enforce\nmx: a.b\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n", "mx pattern"),
    (b"version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1\n", "mx pattern"),
    (b"<html>not a policy</html>\n", "malformed"),
    (b"\xff\xfe", "UTF-8"),
    (b"version: STSv1\n" + b"mx: a.b\n" * 101 + b"mode: enforce\nmax_age: 1\n", "more than"),
    (b"x" * (MAX_POLICY_BYTES + 1), "exceeds"),
])
def test_bad_policy_files_are_refused_with_a_reason(body: bytes, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        parse_policy(body)


def test_wildcard_matches_one_label_only() -> None:
    assert mx_matches("*.example.com", "mx.example.com")
    assert not mx_matches("*.example.com", "a.b.example.com")
    assert not mx_matches("*.example.com", "example.com")
    assert mx_matches("Mail.Example.com", "mail.example.COM.")
    assert not mx_matches("mail.example.com", "xmail.example.com")
