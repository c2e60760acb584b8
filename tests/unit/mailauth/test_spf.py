"""SPF beyond the openspf suite: the identities, loopback, bad input, bounded lookups, real DNS."""

from __future__ import annotations

import asyncio

from pigeon.clocks import FakeClock
from pigeon.dns.resolver import DnsPermError, DnsResolver, DnsTempError
from pigeon.mailauth import MailAuthDns, check_spf
from pigeon.mailauth.spf import MAX_DNS_TERMS
from tests.unit.dns.zone_server import ZoneServer
from tests.unit.mailauth.fakedns import FakeDns


def _spf(dns: MailAuthDns, ip: str, mail_from: str, helo: str = "client.example.net") -> str:
    return asyncio.run(check_spf(dns, ip, mail_from, helo)).result


def test_mail_from_identity_and_fields() -> None:
    dns = FakeDns({"example.net": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")]})
    res = asyncio.run(check_spf(dns, "192.0.2.7", "user@example.net", "h.example.net"))
    assert (res.result, res.identity, res.domain, res.sender, res.mechanism) == (
        "pass", "mailfrom", "example.net", "user@example.net", "ip4:192.0.2.0/24")
    fail = asyncio.run(check_spf(dns, "198.51.100.1", "user@example.net", "h.example.net"))
    assert fail.result == "fail" and fail.mechanism == "-all"
    assert fail.explanation == "198.51.100.1 is not allowed to send mail as user@example.net (SPF of example.net)"


def test_null_sender_checks_helo() -> None:
    dns = FakeDns({"h.example.net": [("TXT", "v=spf1 a -all"), ("A", "192.0.2.9")]})
    res = asyncio.run(check_spf(dns, "192.0.2.9", "", "h.example.net"))
    assert (res.result, res.identity, res.sender) == ("pass", "helo", "postmaster@h.example.net")
    assert _spf(dns, "192.0.2.10", "<>", "h.example.net") == "fail"


def test_loopback_is_not_passed() -> None:
    # Old pyspf passed every 127.0.0.0/8 client; we judge loopback like any address.
    dns = FakeDns({"example.net": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")]})
    assert _spf(dns, "127.0.0.1", "u@example.net") == "fail"
    assert _spf(dns, "::1", "u@example.net") == "fail"
    assert _spf(dns, "::ffff:192.0.2.3", "u@example.net") == "pass"  # IPv4-mapped


def test_all_seven_results() -> None:
    dns = FakeDns({
        "p.test": [("TXT", "v=spf1 +all")], "f.test": [("TXT", "v=spf1 -all")],
        "s.test": [("TXT", "v=spf1 ~all")], "n.test": [("TXT", "v=spf1 ?all")],
        "none.test": [("TXT", "hello")], "t.test": [("TXT", DnsTempError("SERVFAIL"))],
        "e.test": [("TXT", "v=spf1 bogus:x -all")],
    })
    got = [_spf(dns, "192.0.2.1", f"u@{d}.test") for d in ("p", "f", "s", "n", "none", "t", "e")]
    assert got == ["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]


def test_include_loop_ends_in_permerror() -> None:
    dns = FakeDns({"a.test": [("TXT", "v=spf1 include:b.test -all")],
                   "b.test": [("TXT", "v=spf1 include:a.test -all")]})
    res = asyncio.run(check_spf(dns, "192.0.2.1", "u@a.test", "h.test"))
    assert res.result == "permerror" and "DNS-querying terms" in res.explanation
    assert len(dns.queries) <= MAX_DNS_TERMS + 1


def test_self_redirect_ends_in_permerror() -> None:
    dns = FakeDns({"a.test": [("TXT", "v=spf1 redirect=a.test")]})
    assert _spf(dns, "192.0.2.1", "u@a.test") == "permerror"


def test_lookups_are_bounded_with_many_mx_hosts() -> None:
    # Ten mx terms, each naming ten exchanges: at most 10 × (1 + 10) queries plus the record.
    zone: dict[str, list[tuple[str, object]]] = {
        "a.test": [("TXT", "v=spf1 " + " ".join(f"mx:m{i}.test" for i in range(12)) + " -all")]}
    for i in range(12):
        zone[f"m{i}.test"] = [("MX", (n, f"h{n}.m{i}.test")) for n in range(10)]
    dns = FakeDns(zone)
    assert _spf(dns, "192.0.2.1", "u@a.test") == "permerror"  # the 11th mx term
    assert len(dns.queries) <= 1 + MAX_DNS_TERMS * 11


def test_too_many_mx_records_is_permerror() -> None:
    dns = FakeDns({"a.test": [("TXT", "v=spf1 mx -all")] + [("MX", (n, f"h{n}.a.test")) for n in range(11)]})
    assert _spf(dns, "192.0.2.1", "u@a.test") == "permerror"


def test_void_lookups_limit() -> None:
    dns = FakeDns({"a.test": [("TXT", "v=spf1 a:x1.test a:x2.test a:x3.test +all")]})
    assert _spf(dns, "192.0.2.1", "u@a.test") == "permerror"
    dns = FakeDns({"a.test": [("TXT", "v=spf1 a:x1.test a:x2.test +all")]})
    assert _spf(dns, "192.0.2.1", "u@a.test") == "pass"


def test_malformed_records_and_answers() -> None:
    dns = FakeDns({
        "two.test": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 +all")],
        "bin.test": [("TXT", b"v=spf1 ip4:192.0.2.1 \xff\xfe -all")],
        "long.test": [("TXT", "v=spf1 " + "ip4:192.0.2.255 " * 2000 + "-all")],
        "badip.test": [("TXT", "v=spf1 a -all"), ("A", "not-an-address"), ("A", "192.0.2.1")],
        "cidr.test": [("TXT", "v=spf1 ip4:192.0.2.1/33 -all")],
        "macro.test": [("TXT", "v=spf1 exists:%{z}.test -all")],
        "huge.test": [("TXT", DnsPermError("huge.test/TXT: answer larger than 16384 bytes"))],
        "inc.test": [("TXT", "v=spf1 include:huge.test -all")],
    })
    assert _spf(dns, "192.0.2.1", "u@huge.test") == "permerror"  # an oversized answer (resolver rule 7)
    assert _spf(dns, "192.0.2.1", "u@inc.test") == "permerror"
    assert _spf(dns, "192.0.2.1", "u@two.test") == "permerror"
    assert _spf(dns, "192.0.2.1", "u@bin.test") == "permerror"
    assert _spf(dns, "192.0.2.1", "u@long.test") == "fail"  # long but valid: linear work
    assert _spf(dns, "192.0.2.1", "u@badip.test") == "pass"  # the bad address is skipped
    assert _spf(dns, "192.0.2.1", "u@cidr.test") == "permerror"
    assert _spf(dns, "192.0.2.1", "u@macro.test") == "permerror"
    assert _spf(dns, "not-an-ip", "u@two.test") == "permerror"


def test_exp_uses_receiver_and_time() -> None:
    dns = FakeDns({"a.test": [("TXT", "v=spf1 -all exp=why.a.test")],
                   "why.a.test": [("TXT", "%{c} refused by %{r} at %{t}")]})
    res = asyncio.run(check_spf(dns, "2001:db8::1", "u@a.test", "h.test", receiver="mx.our.test", now=1234.5))
    assert res.explanation == "2001:db8::1 refused by mx.our.test at 1234"


def test_with_the_real_resolver() -> None:
    zone = {
        "example.net": [("TXT", "v=spf1 mx include:_spf.example.net -all"), ("MX", "10 mx.example.net")],
        "mx.example.net": [("A", "127.0.0.2")],
        "_spf.example.net": [("TXT", "v=spf1 ptr:example.net ~all")],
        "3.0.0.127.in-addr.arpa": [("PTR", "out.example.net")],
        "out.example.net": [("A", "127.0.0.3")],
    }
    with ZoneServer(zone, servfail={"broken.example.net"}) as srv:
        resolver = DnsResolver([srv.endpoint], FakeClock(), lifetime=2.0, try_timeout=1.0)
        assert _spf(resolver, "127.0.0.2", "u@example.net") == "pass"  # mx
        assert _spf(resolver, "127.0.0.3", "u@example.net") == "pass"  # include → ptr
        assert _spf(resolver, "127.0.0.4", "u@example.net") == "fail"
        assert _spf(resolver, "127.0.0.4", "u@nowhere.example.net") == "none"
        assert _spf(resolver, "127.0.0.4", "u@broken.example.net") == "temperror"
