"""The real resolver (dnspython) against a real authoritative server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pigeon.clocks import FakeClock
from pigeon.dns.fake import FakeResolver
from pigeon.dns.resolver import DnsPermError, DnsResolver, DnsTempError, MxRecord, NoSuchDomain
from tests.unit.dns.zone_server import ZoneServer, free_udp_port

ZONE = {
    "example.org": [("MX", "10 mx1.example.org"), ("MX", "20 mx2.example.org"), ("A", "192.0.2.9")],
    "mx1.example.org": [("A", "192.0.2.1"), ("AAAA", "2001:db8::1")],
    "mx2.example.org": [("A", "192.0.2.2", 5)],
    "alias.example.org": [("CNAME", "mx1.example.org")],
    "nullmx.example.org": [("MX", "0 .")],
    "nomx.example.org": [("A", "192.0.2.7")],
}


@pytest.fixture
def dns() -> Iterator[ZoneServer]:
    with ZoneServer(ZONE, servfail={"broken.example.org"}) as srv:
        yield srv


def _resolver(srv: ZoneServer, clock: FakeClock | None = None) -> DnsResolver:
    return DnsResolver([srv.endpoint], clock or FakeClock(), lifetime=2.0, try_timeout=1.0)


def test_mx_records(dns: ZoneServer) -> None:
    r = _resolver(dns)
    assert sorted(asyncio.run(r.mx("example.org"))) == [MxRecord(10, "mx1.example.org"), MxRecord(20, "mx2.example.org")]


def test_null_mx_is_empty_host(dns: ZoneServer) -> None:
    assert asyncio.run(_resolver(dns).mx("nullmx.example.org")) == [MxRecord(0, "")]


def test_no_mx_is_empty_list(dns: ZoneServer) -> None:
    assert asyncio.run(_resolver(dns).mx("nomx.example.org")) == []


def test_nxdomain(dns: ZoneServer) -> None:
    r = _resolver(dns)
    with pytest.raises(NoSuchDomain):
        asyncio.run(r.mx("nowhere.example.org"))
    with pytest.raises(NoSuchDomain):
        asyncio.run(r.addresses("nowhere.example.org"))


def test_servfail_is_temporary(dns: ZoneServer) -> None:
    with pytest.raises(DnsTempError):
        asyncio.run(_resolver(dns).mx("broken.example.org"))


def test_timeout_is_temporary() -> None:
    # A UDP port nobody answers on: the query times out.
    r = DnsResolver([("127.0.0.1", free_udp_port())], FakeClock(), lifetime=0.5, try_timeout=0.2)
    with pytest.raises(DnsTempError):
        asyncio.run(r.mx("example.org"))


def test_addresses_a_then_aaaa(dns: ZoneServer) -> None:
    assert asyncio.run(_resolver(dns).addresses("mx1.example.org")) == ["192.0.2.1", "2001:db8::1"]


def test_cname_followed(dns: ZoneServer) -> None:
    assert asyncio.run(_resolver(dns).addresses("alias.example.org")) == ["192.0.2.1", "2001:db8::1"]


def test_cache_honours_ttl(dns: ZoneServer) -> None:
    clock = FakeClock()
    r = _resolver(dns, clock)

    async def twice() -> None:
        assert await r.addresses("mx2.example.org") == ["192.0.2.2"]
        assert await r.addresses("mx2.example.org") == ["192.0.2.2"]

    asyncio.run(twice())
    assert dns.queries.count(("mx2.example.org", "A")) == 1  # second answer from the cache
    dns.zone["mx2.example.org"] = [("A", "192.0.2.22", 5)]
    clock.advance(6)  # past the 5 s TTL
    assert asyncio.run(r.addresses("mx2.example.org")) == ["192.0.2.22"]
    assert dns.queries.count(("mx2.example.org", "A")) == 2


def test_negative_answers_cached_briefly(dns: ZoneServer) -> None:
    clock = FakeClock()
    r = _resolver(dns, clock)
    for _ in range(2):
        with pytest.raises(NoSuchDomain):
            asyncio.run(r.mx("new.example.org"))
    assert dns.queries.count(("new.example.org", "MX")) == 1
    dns.zone["new.example.org"] = [("MX", "5 mx1.example.org")]
    clock.advance(61)
    assert asyncio.run(r.mx("new.example.org")) == [MxRecord(5, "mx1.example.org")]


def test_fake_resolver_semantics() -> None:
    fake = FakeResolver(mx={"a.test": [MxRecord(1, "mx.a.test")]}, hosts={"mx.a.test": ["192.0.2.1"]})
    assert asyncio.run(fake.mx("a.test")) == [MxRecord(1, "mx.a.test")]
    assert asyncio.run(fake.mx("mx.a.test")) == []  # exists, no MX
    with pytest.raises(NoSuchDomain):
        asyncio.run(fake.addresses("b.test"))
    fake.hosts["c.test"] = DnsTempError("SERVFAIL")
    with pytest.raises(DnsTempError):
        asyncio.run(fake.addresses("c.test"))


# Rule 6: the lookups of mail authentication (TXT, A, AAAA, PTR) share the cache and the errors.
AUTH_ZONE = {
    "example.net": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all"), ("TXT", "other"), ("A", "192.0.2.3")],
    "k2048._domainkey.example.net": [("TXT", "v=DKIM1; k=rsa; p=" + "A" * 392)],
    "huge.example.net": [("TXT", f"{i:02d}" + "x" * 1000) for i in range(20)],
    "v6only.example.net": [("AAAA", "2001:db8::3")],
    "3.2.0.192.in-addr.arpa": [("PTR", "Host.Example.Net")],
}


@pytest.fixture
def auth_dns() -> Iterator[ZoneServer]:
    with ZoneServer(AUTH_ZONE, servfail={"broken.example.net"}) as srv:
        yield srv


def test_txt_records_joined_as_bytes(auth_dns: ZoneServer) -> None:
    r = _resolver(auth_dns)
    assert sorted(asyncio.run(r.txt("example.net"))) == [b"other", b"v=spf1 ip4:192.0.2.0/24 -all"]
    # A record longer than 255 octets travels as several character-strings, joined here.
    key = asyncio.run(r.txt("k2048._domainkey.example.net"))
    assert key == [b"v=DKIM1; k=rsa; p=" + b"A" * 392]


def test_txt_outcomes(auth_dns: ZoneServer) -> None:
    r = _resolver(auth_dns)
    assert asyncio.run(r.txt("v6only.example.net")) == []  # the name exists: no records
    with pytest.raises(NoSuchDomain):
        asyncio.run(r.txt("nowhere.example.net"))
    with pytest.raises(DnsTempError):
        asyncio.run(r.txt("broken.example.net"))


def test_txt_answer_over_the_cap_is_permanent(auth_dns: ZoneServer) -> None:
    with pytest.raises(DnsPermError):
        asyncio.run(_resolver(auth_dns).txt("huge.example.net"))


def test_a_aaaa_ptr(auth_dns: ZoneServer) -> None:
    r = _resolver(auth_dns)
    assert asyncio.run(r.a("example.net")) == ["192.0.2.3"]
    assert asyncio.run(r.aaaa("example.net")) == []
    assert asyncio.run(r.aaaa("v6only.example.net")) == ["2001:db8::3"]
    assert asyncio.run(r.ptr("192.0.2.3")) == ["host.example.net"]
    with pytest.raises(NoSuchDomain):
        asyncio.run(r.ptr("192.0.2.4"))
    with pytest.raises(DnsPermError):
        asyncio.run(r.ptr("not-an-ip"))


def test_txt_cached(auth_dns: ZoneServer) -> None:
    r = _resolver(auth_dns)

    async def twice() -> None:
        await r.txt("example.net")
        await r.txt("example.net")

    asyncio.run(twice())
    assert auth_dns.queries.count(("example.net", "TXT")) == 1


def test_cached_tells_whether_an_answer_is_there_without_asking(dns: ZoneServer) -> None:
    clock = FakeClock()
    r = _resolver(dns, clock)
    assert not r.cached("mx2.example.org", "A")
    asked = len(dns.queries)
    assert asyncio.run(r.a("mx2.example.org")) == ["192.0.2.2"]
    assert len(dns.queries) == asked + 1
    assert r.cached("MX2.example.org.", "A") and not r.cached("mx2.example.org", "AAAA")
    assert len(dns.queries) == asked + 1  # cached() itself asks nobody
    clock.advance(6)  # past the 5 s TTL
    assert not r.cached("mx2.example.org", "A")
