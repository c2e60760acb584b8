"""DMARC: header From, discovery, alignment, p/sp/pct, and malformed records."""

from __future__ import annotations

import asyncio

import hypothesis
import hypothesis.strategies
import pytest

from pigeon.dns.resolver import DnsTempError
from pigeon.mailauth.dkim import DkimResult
from pigeon.mailauth.dmarc import DmarcResult, check_dmarc, header_from_domain, parse_dmarc_record
from pigeon.mailauth.orgdomain import bundled
from pigeon.mailauth.spf import SpfResult
from tests.unit.mailauth.fakedns import FakeDns

ZONE = {
    "_dmarc.example.net": [("TXT", "v=DMARC1; p=reject; sp=quarantine; pct=50; rua=mailto:d@example.net!10m,https://x")],
    "_dmarc.strict.test": [("TXT", "v=DMARC1; p=quarantine; adkim=s; aspf=s")],
    "_dmarc.none.test": [("TXT", "v=DMARC1; p=none")],
    "_dmarc.two.test": [("TXT", "v=DMARC1; p=reject"), ("TXT", "v=DMARC1; p=none")],
    "_dmarc.bad.test": [("TXT", "v=DMARC1; p=bogus")],
    "_dmarc.ruaonly.test": [("TXT", "v=DMARC1; rua=mailto:r@ruaonly.test")],
    "_dmarc.temp.test": [("TXT", DnsTempError("SERVFAIL"))],
    "_dmarc.other.test": [("TXT", "v=spf1 -all"), ("TXT", "V=DMARC1; p=reject")],
    "_dmarc.co.uk": [("TXT", "v=DMARC1; p=reject")],
}


def _spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, "mailfrom", domain, f"u@{domain}")  # type: ignore[arg-type]


def _dkim(result: str, domain: str) -> DkimResult:
    return DkimResult(result, domain, "sel", "rsa-sha256")  # type: ignore[arg-type]


def _check(from_domain: str, spf: SpfResult, dkim: list[DkimResult], sample: float = 0.0) -> DmarcResult:
    return asyncio.run(check_dmarc(FakeDns(ZONE), from_domain, spf, dkim, sample=sample))


def test_pass_by_relaxed_alignment() -> None:
    r = _check("example.net", _spf("pass", "bounces.example.net"), [])
    assert (r.result, r.spf_aligned, r.dkim_aligned, r.policy, r.disposition) == ("pass", True, False, "reject", "none")
    r = _check("example.net", _spf("fail", "other.test"), [_dkim("pass", "mail.example.net")])
    assert (r.result, r.dkim_aligned) == ("pass", True)
    assert r.record is not None and r.record.rua == ("mailto:d@example.net",) and r.record.pct == 50


def test_fail_reject_and_pct_sampling() -> None:
    r = _check("example.net", _spf("pass", "other.test"), [_dkim("pass", "other.test"), _dkim("fail", "example.net")])
    assert (r.result, r.policy, r.disposition) == ("fail", "reject", "reject")
    r = _check("example.net", _spf("softfail", "example.net"), [], sample=0.7)  # pct=50: spared
    assert (r.result, r.disposition) == ("fail", "quarantine")


def test_subdomain_uses_sp_from_the_org_domain() -> None:
    r = _check("news.example.net", _spf("fail", "news.example.net"), [])
    assert (r.result, r.org_domain, r.policy, r.disposition) == ("fail", "example.net", "quarantine", "quarantine")
    assert r.record is not None and r.record.domain == "example.net"


def test_strict_alignment() -> None:
    r = _check("strict.test", _spf("pass", "mail.strict.test"), [_dkim("pass", "mail.strict.test")])
    assert (r.result, r.disposition) == ("fail", "quarantine")
    r = _check("strict.test", _spf("pass", "strict.test"), [])
    assert r.result == "pass"


def test_public_suffix_is_not_an_org_domain() -> None:
    # example.co.uk's org domain is itself; co.uk's record is never consulted.
    r = _check("mail.example.co.uk", _spf("fail", "x.test"), [])
    assert (r.result, r.org_domain, r.record) == ("none", "example.co.uk", None)
    assert bundled().org_domain("a.b.example.co.uk") == "example.co.uk"
    assert not bundled().aligned("example.co.uk", "other.co.uk", "r")


def test_no_record_still_reports_alignment() -> None:
    r = _check("unpublished.test", _spf("pass", "unpublished.test"), [])
    assert (r.result, r.spf_aligned, r.policy, r.disposition) == ("none", True, None, "none")
    r = _check("unpublished.test", _spf("pass", "elsewhere.test"), [])
    assert (r.result, r.spf_aligned, r.dkim_aligned) == ("none", False, False)


def test_record_errors() -> None:
    assert _check("two.test", _spf("fail", "x.test"), []).result == "none"
    assert _check("bad.test", _spf("fail", "x.test"), []).result == "permerror"
    r = _check("ruaonly.test", _spf("fail", "x.test"), [])
    assert (r.result, r.policy, r.disposition) == ("fail", "none", "none")
    assert _check("temp.test", _spf("pass", "temp.test"), []).result == "temperror"
    assert _check("other.test", _spf("fail", "x.test"), []).result == "none"  # v= is case-sensitive
    assert _check("", _spf("pass", "x.test"), []).result == "permerror"


def test_record_parsing_defaults() -> None:
    rec = parse_dmarc_record("v=DMARC1; p=Reject; pct=250; adkim=x; ri=abc; fo=1:d; ruf=mailto:f@x.test")
    assert (rec.p, rec.pct, rec.adkim, rec.ri, rec.fo, rec.ruf) == ("reject", 100, "r", 86400, "1:d", ("mailto:f@x.test",))


@pytest.mark.parametrize(("headers", "domain"), [
    (b"From: Alice <alice@Example.NET>\r\nTo: b@x.test\r\n\r\nFrom: body@not.test\r\n", "example.net"),
    (b"To: b@x.test\r\nFROM:\r\n  \"Alice, A.\" <alice@example.net>\r\n\r\n", "example.net"),
    (b"From: a@example.net\r\nFrom: b@example.net\r\n\r\n", None),
    (b"From: a@example.net, b@example.org\r\n\r\n", None),
    (b"From: undisclosed-recipients:;\r\n\r\n", None),
    (b"To: b@x.test\r\n\r\n", None),
    (b"From: alice\r\n\r\n", None),
    (b"From: a@[192.0.2.1]\r\n\r\n", None),
    (b"From: \xff\xfe <a@example.net>\n\n", "example.net"),
    # the simple forms read without email.utils, and their near misses that go to it
    (b"From: a.b+c@Mail.Example.NET\r\n\r\n", "mail.example.net"),
    (b"From:<a@example.net>\r\n\r\n", "example.net"),
    (b"From: Bench Sender\r\n <a@example.net>\r\n\r\n", "example.net"),
    (b"From : Alice <a@example.net>\r\n\r\n", "example.net"),
    (b"From: a@example.net (Alice)\r\n\r\n", "example.net"),
    (b"From: J. Doe <a@example.net>\r\n\r\n", "example.net"),
    (b"From: a@example.net.\r\n\r\n", "example.net"),
    (b"From: <a@example>\r\n\r\n", None),
    (b"Resent-From: a@example.net\r\nX-From: b@example.org\r\n\r\n", None),
])
def test_header_from_domain(headers: bytes, domain: str | None) -> None:
    assert header_from_domain(headers) == domain


def test_many_from_fields_stop_early() -> None:
    assert header_from_domain(b"From: a@example.net\r\n" * 100_000 + b"\r\n") is None


_PIECES = ["From", "from", "FROM", "From-X", "Fromage", "Sender", "To", ":", " ", "\t", "\r\n", "\n", "\r\n ",
           "\r\n\t", "a@b.test", "<c@d.test>", "Name", ",", "\"q\"", "(c)", "\u00e9", "\r"]


@hypothesis.settings(max_examples=3000, deadline=None)
@hypothesis.given(hypothesis.strategies.lists(hypothesis.strategies.sampled_from(_PIECES), max_size=30))
def test_the_fast_single_from_path_agrees_with_the_regular_expression(parts: list[str]) -> None:
    from pigeon.mailauth.dmarc import _FROM_FIELD, _single_from_value

    head = "".join(parts).encode("utf-8")
    fast = _single_from_value(head)
    slow = [m.group(1) for m in _FROM_FIELD.finditer(head.decode("utf-8", "surrogateescape"))]
    if fast is not None:
        assert slow == [fast]
