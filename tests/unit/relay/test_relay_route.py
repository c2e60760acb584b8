"""Routing: MX order, implicit MX, null MX, NXDOMAIN, self in the MX list, literals, IDNA, smarthost."""

from __future__ import annotations

import asyncio
import random

import pytest

from pigeon.core.results import PermanentError, TemporaryError
from pigeon.delivery.relay_route import MxHost, RouteSettings, Router, literal_address, to_ascii
from pigeon.dns.fake import FakeResolver
from pigeon.dns.resolver import DnsTempError, MxRecord, NoSuchDomain

HOSTS: dict[str, list[str] | DnsTempError | NoSuchDomain] = {
    "mx1.a.test": ["192.0.2.1"],
    "mx2.a.test": ["192.0.2.2", "2001:db8::2"],
    "mx3.a.test": ["192.0.2.3"],
    "me.test": ["192.0.2.100"],
    "plain.test": ["192.0.2.50"],
    "xn--bcher-kva.test": ["192.0.2.60"],
    "relay.isp.test": ["192.0.2.70"],
}


def _router(mx: dict[str, list[MxRecord]], hostname: str = "me.test", own: frozenset[str] = frozenset(),
            smarthost: tuple[str, int] | None = None, seed: int = 1) -> Router:
    resolver = FakeResolver(mx=mx, hosts=dict(HOSTS))  # type: ignore[arg-type]
    return Router(resolver, RouteSettings(hostname, own, 2525, smarthost), random.Random(seed))


def _route(router: Router, domain: str) -> list[MxHost]:
    return asyncio.run(router.route(domain))


def test_sorted_by_preference_with_addresses_and_port() -> None:
    r = _router({"a.test": [MxRecord(20, "mx2.a.test"), MxRecord(10, "mx1.a.test")]})
    hosts = _route(r, "a.test")
    assert [(h.name, h.preference, h.addresses, h.port) for h in hosts] == [
        ("mx1.a.test", 10, ("192.0.2.1",), 2525),
        ("mx2.a.test", 20, ("192.0.2.2", "2001:db8::2"), 2525),
    ]
    assert hosts[0].label("192.0.2.1") == "mx1.a.test[192.0.2.1]:2525"


def test_equal_preferences_are_shuffled() -> None:
    mx = {"a.test": [MxRecord(10, "mx1.a.test"), MxRecord(10, "mx2.a.test"), MxRecord(10, "mx3.a.test"),
                     MxRecord(5, "me.test")]}
    firsts = set()
    for seed in range(30):
        hosts = _route(_router(mx, hostname="other.test", seed=seed), "a.test")
        assert hosts[0].name == "me.test"  # the lower preference always comes first
        firsts.add(hosts[1].name)
    assert firsts == {"mx1.a.test", "mx2.a.test", "mx3.a.test"}


def test_implicit_mx() -> None:
    hosts = _route(_router({}), "plain.test")
    assert [(h.name, h.addresses, h.implicit) for h in hosts] == [("plain.test", ("192.0.2.50",), True)]


def test_null_mx_is_556() -> None:
    with pytest.raises(PermanentError) as exc:
        _route(_router({"a.test": [MxRecord(0, "")]}), "a.test")
    assert (exc.value.reply.code, exc.value.reply.enhanced) == (556, "5.1.10")


def test_nxdomain_is_permanent_550() -> None:
    with pytest.raises(PermanentError) as exc:
        _route(_router({}), "nowhere.test")
    assert (exc.value.reply.code, exc.value.reply.enhanced) == (550, "5.1.2")


def test_servfail_is_temporary() -> None:
    r = _router({})
    r.resolver.mx_records["a.test"] = DnsTempError("SERVFAIL")  # type: ignore[attr-defined]
    with pytest.raises(TemporaryError) as exc:
        _route(r, "a.test")
    assert exc.value.reply.code == 451


def test_mx_host_without_address_is_kept_with_its_error() -> None:
    r = _router({"a.test": [MxRecord(10, "gone.a.test"), MxRecord(20, "mx1.a.test")]})
    hosts = _route(r, "a.test")
    assert hosts[0].addresses == () and "NXDOMAIN" in hosts[0].error and not hosts[0].error_temporary
    assert hosts[1].addresses == ("192.0.2.1",)


def test_numeric_mx_is_skipped() -> None:
    r = _router({"a.test": [MxRecord(10, "192.0.2.9"), MxRecord(20, "mx1.a.test")]})
    assert [h.name for h in _route(r, "a.test")] == ["mx1.a.test"]


def test_self_in_mx_list_keeps_only_better_hosts() -> None:
    mx = {"a.test": [MxRecord(10, "mx1.a.test"), MxRecord(20, "me.test"), MxRecord(30, "mx3.a.test")]}
    assert [h.name for h in _route(_router(mx), "a.test")] == ["mx1.a.test"]


def test_self_by_listen_address() -> None:
    mx = {"a.test": [MxRecord(10, "mx1.a.test"), MxRecord(20, "mx2.a.test")]}
    r = _router(mx, hostname="unrelated.test", own=frozenset({"192.0.2.2"}))
    assert [h.name for h in _route(r, "a.test")] == ["mx1.a.test"]


def test_self_as_best_mx_is_a_loop() -> None:
    mx = {"a.test": [MxRecord(10, "me.test"), MxRecord(20, "mx1.a.test")]}
    with pytest.raises(PermanentError) as exc:
        _route(_router(mx), "a.test")
    assert exc.value.reply.enhanced == "5.4.6"


def test_address_literal() -> None:
    hosts = _route(_router({}), "[192.0.2.44]")
    assert [(h.name, h.addresses) for h in hosts] == [("[192.0.2.44]", ("192.0.2.44",))]
    hosts = _route(_router({}), "[IPv6:2001:db8::44]")
    assert hosts[0].addresses == ("2001:db8::44",)
    with pytest.raises(PermanentError) as exc:
        _route(_router({}, own=frozenset({"192.0.2.44"})), "[192.0.2.44]")
    assert exc.value.reply.enhanced == "5.4.6"


def test_idna_a_labels() -> None:
    assert to_ascii("bücher.test") == "xn--bcher-kva.test"
    assert to_ascii("Example.TEST.") == "example.test"
    hosts = _route(_router({}), "bücher.test")
    assert hosts[0].name == "xn--bcher-kva.test"


def test_literal_address_parsing() -> None:
    assert literal_address("[192.0.2.1]") == "192.0.2.1"
    assert literal_address("[IPv6:2001:db8::1]") == "2001:db8::1"
    assert literal_address("example.test") is None
    assert literal_address("[not-an-ip]") is None


def test_smarthost_overrides_mx() -> None:
    r = _router({"a.test": [MxRecord(10, "mx1.a.test")]}, smarthost=("relay.isp.test", 587))
    hosts = _route(r, "a.test")
    assert [(h.name, h.addresses, h.port) for h in hosts] == [("relay.isp.test", ("192.0.2.70",), 587)]
    r = _router({}, smarthost=("192.0.2.71", 25))
    assert _route(r, "anything.test")[0].addresses == ("192.0.2.71",)


def test_smarthost_dns_failure_is_temporary() -> None:
    r = _router({}, smarthost=("missing.isp.test", 25))
    with pytest.raises(TemporaryError):
        _route(r, "a.test")
