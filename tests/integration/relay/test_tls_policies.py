"""MTA-STS, DANE and REQUIRETLS on loopback: the relay agent, a real DNS server (dnslib, with the
AD bit and TLSA records), an HTTPS policy host (Python's http.server with ssl) and scripted MX
peers (tests/unit/relay/peer.py) with certificates from a test CA given as ``tls_ca_file``.

- dest.test: MX 10 mx1.dest.test (127.0.0.2, the peer); ``_mta-sts.dest.test`` TXT; the policy
  host mta-sts.dest.test (127.0.0.7) on a test port (``mta_sts_port``).
- A message to dest.test goes to the peer; "nothing sent in the clear" is the peer having
  recorded no transaction at all.
"""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pigeon.clocks import SystemClock
from pigeon.core.address import Address
from pigeon.core.envelope import Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.queue.source import FileBody
from pigeon.delivery.relay import RelayDelivery, RelayJob, RelaySettings
from pigeon.delivery.tlspolicy.tlsa import association
from pigeon.dns.resolver import DnsResolver
from tests.integration.harness import free_port
from tests.unit.dns.zone_server import ZoneServer
from tests.unit.relay.peer import DEFAULT_EXTS, Peer, Script
from tests.unit.tlspolicy.certs import Issued, make_ca, make_leaf

pytestmark = pytest.mark.integration

QID = QueueId("0000000000000003")
SENDER = Address("alice", "sender.test")
BOB = Address("bob", "dest.test")
GOOD_POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.dest.test\r\nmax_age: 86400\r\n"


@dataclass
class PolicyHost:
    """The HTTPS server of mta-sts.dest.test: what it answers is set per test."""

    body: bytes = GOOD_POLICY
    status: int = 200
    ctype: str = "text/plain"
    location: str = ""
    hits: list[str] = field(default_factory=list)


def _https(host: PolicyHost, cert: Path, key: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            host.hits.append(f"{self.headers.get('Host')} {self.path}")
            self.send_response(host.status)
            self.send_header("Content-Type", host.ctype)
            if host.location:
                self.send_header("Location", host.location)
            self.send_header("Content-Length", str(len(host.body)))
            self.end_headers()
            self.wfile.write(host.body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port("127.0.0.7")
    server = http.server.ThreadingHTTPServer(("127.0.0.7", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@dataclass
class World:
    tmp: Path
    ca: Issued
    ca_file: Path
    dns: ZoneServer
    policy: PolicyHost
    https_port: int


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ca = make_ca()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.pem())
    cert, key = make_leaf(ca, "mta-sts.dest.test").write(tmp_path, "mta-sts")
    policy = PolicyHost()
    server, port = _https(policy, cert, key)
    zone = {
        "dest.test": [("MX", "10 mx1.dest.test")],
        "mx1.dest.test": [("A", "127.0.0.2")],
        "_mta-sts.dest.test": [("TXT", "v=STSv1; id=20261207")],
        "mta-sts.dest.test": [("A", "127.0.0.7")],
    }
    dns = ZoneServer(zone).start()
    try:
        yield World(tmp_path, ca, ca_file, dns, policy, port)
    finally:
        dns.stop()
        server.shutdown()
        server.server_close()


def _server_ctx(tmp: Path, leaf: Issued, chain: tuple[Issued, ...] = ()) -> ssl.SSLContext:
    cert, key = leaf.write(tmp, "mx", chain)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def _run(w: World, script: Script, env: Envelope | None = None, dnssec: bool = False,
         rounds: int = 1) -> tuple[list[RecipientResult], Peer, RelayDelivery]:
    body = w.tmp / "body.eml"
    body.write_bytes(b"From: alice@sender.test\r\nSubject: policy\r\n\r\nhello\r\n")

    async def main() -> tuple[list[RecipientResult], Peer, RelayDelivery]:
        peer = await Peer(script, host="127.0.0.2").start()
        resolver = DnsResolver([w.dns.endpoint], SystemClock(), lifetime=3.0)
        agent = RelayDelivery(resolver, RelaySettings(
            "mx.sender.test", remote_port=peer.port, ca_file=w.ca_file, mta_sts_port=w.https_port,
            state_dir=w.tmp / "state", dnssec=dnssec))
        rcpt = Recipient(BOB)
        job = RelayJob(QID, SENDER, (BOB,), FileBody(body), envelope=env or Envelope(SENDER, [rcpt]), params=(rcpt,))
        try:
            results: list[RecipientResult] = []
            for _ in range(rounds):
                results = await agent.deliver(job)
            return results, peer, agent
        finally:
            await agent.close()
            await peer.stop()

    return asyncio.run(main())


def test_mta_sts_enforce_good_certificate_is_delivered_over_verified_tls(world: World) -> None:
    ctx = _server_ctx(world.tmp, make_leaf(world.ca, "mx1.dest.test"))
    results, peer, agent = _run(world, Script(tls=ctx))
    assert results[0].status == "delivered", results[0].reply
    assert len(peer.received) == 1 and peer.received[0].tls
    assert world.policy.hits == ["mta-sts.dest.test /.well-known/mta-sts.txt"]
    # the policy is kept on disk (RFC 8461 §5.1 cache), and the session counted for TLS-RPT
    assert "mx1.dest.test" in (world.tmp / "state" / "mta-sts.json").read_text()
    tallies = list((world.tmp / "state").glob("tlsrpt-*.json"))
    assert tallies and '"success":1' in tallies[0].read_text()


@pytest.mark.parametrize("case", ["wrong-name", "untrusted", "no-starttls"])
def test_mta_sts_enforce_bad_tls_defers_and_sends_nothing(world: World, case: str) -> None:
    if case == "wrong-name":
        script = Script(tls=_server_ctx(world.tmp, make_leaf(world.ca, "other.example")))
    elif case == "untrusted":
        script = Script(tls=_server_ctx(world.tmp, make_leaf(make_ca("Other CA"), "mx1.dest.test")))
    else:
        script = Script(tls=None)
    results, peer, _ = _run(world, script)
    assert results[0].status == "deferred"
    assert results[0].reply.enhanced == "4.7.5", results[0].reply
    assert peer.received == []  # never in the clear
    tally = next((world.tmp / "state").glob("tlsrpt-*.json")).read_text()
    assert '"failure":1' in tally
    want = {"wrong-name": "certificate-host-mismatch", "untrusted": "certificate-not-trusted",
            "no-starttls": "starttls-not-supported"}[case]
    assert want in tally


def test_mta_sts_enforce_mx_not_in_policy_is_deferred(world: World) -> None:
    world.policy.body = GOOD_POLICY.replace(b"mx: mx1.dest.test", b"mx: *.elsewhere.test")
    results, peer, _ = _run(world, Script(tls=_server_ctx(world.tmp, make_leaf(world.ca, "mx1.dest.test"))))
    assert results[0].status == "deferred" and results[0].reply.enhanced == "4.7.5"
    assert "not an MX host of the MTA-STS policy" in results[0].reply.text
    assert peer.received == []


def test_mta_sts_testing_delivers_as_before_and_records_the_failure(world: World) -> None:
    world.policy.body = GOOD_POLICY.replace(b"enforce", b"testing")
    results, peer, _ = _run(world, Script(tls=_server_ctx(world.tmp, make_leaf(world.ca, "other.example"))))
    assert results[0].status == "delivered"
    assert len(peer.received) == 1
    assert "certificate-host-mismatch" in next((world.tmp / "state").glob("tlsrpt-*.json")).read_text()


@pytest.mark.parametrize("hostile", ["huge", "media-type", "redirect", "syntax", "status"])
def test_hostile_policy_host_means_no_policy_and_a_log_line(world: World, hostile: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    if hostile == "huge":
        world.policy.body = GOOD_POLICY + b"x" * (1 << 20)
    elif hostile == "media-type":
        world.policy.ctype = "text/html"
    elif hostile == "redirect":
        world.policy.status, world.policy.location = 302, "https://evil.example/policy"
    elif hostile == "syntax":
        world.policy.body = b"<html>oops</html>"
    else:
        world.policy.status = 500
    results, peer, _ = _run(world, Script(tls=None))  # no policy: delivered opportunistically (RFC 8461 §5)
    assert results[0].status == "delivered"
    assert len(peer.received) == 1
    assert any("mta-sts: dest.test" in r.getMessage() for r in caplog.records)


def test_cached_policy_survives_a_broken_policy_host_and_a_restart(world: World) -> None:
    ctx = _server_ctx(world.tmp, make_leaf(world.ca, "mx1.dest.test"))
    assert _run(world, Script(tls=ctx))[0][0].status == "delivered"
    # the policy host now serves garbage under a new id: the cached enforce policy still holds
    world.policy.body = b"garbage"
    world.dns.zone["_mta-sts.dest.test"] = [("TXT", "v=STSv1; id=20261208")]
    results, peer, _ = _run(world, Script(tls=None))  # a new agent: the cache came from disk
    assert results[0].status == "deferred" and results[0].reply.enhanced == "4.7.5"
    assert peer.received == []


def _dane_zone(w: World, records: list[str], secure: bool = True) -> None:
    w.dns.zone.pop("_mta-sts.dest.test", None)
    w.dns.zone["_25._tcp.mx1.dest.test"] = [("TLSA", r) for r in records]
    if secure:
        w.dns.secure.update({"dest.test", "_25._tcp.mx1.dest.test"})


@pytest.mark.parametrize("usage", ["ee", "ta"])
def test_dane_match_is_delivered(world: World, usage: str) -> None:
    leaf = make_leaf(world.ca, "mx1.dest.test")
    if usage == "ee":
        _dane_zone(world, [f"3 1 1 {association(leaf.der, 1, 1).hex()}"])
    else:
        _dane_zone(world, [f"2 0 1 {association(world.ca.der, 0, 1).hex()}"])
    results, peer, _ = _run(world, Script(tls=_server_ctx(world.tmp, leaf, (world.ca,))), dnssec=True)
    assert results[0].status == "delivered", results[0].reply
    assert peer.received[0].tls


def test_dane_mismatch_defers_even_with_a_good_mta_sts_policy(world: World) -> None:
    leaf = make_leaf(world.ca, "mx1.dest.test")
    other = make_leaf(world.ca, "mx1.dest.test")
    world.dns.zone["_25._tcp.mx1.dest.test"] = [("TLSA", f"3 1 1 {association(other.der, 1, 1).hex()}")]
    world.dns.secure.update({"dest.test", "_25._tcp.mx1.dest.test"})
    results, peer, _ = _run(world, Script(tls=_server_ctx(world.tmp, leaf)), dnssec=True)
    assert results[0].status == "deferred" and results[0].reply.enhanced == "4.7.5"
    assert "DANE" in results[0].reply.text
    assert peer.received == []


def test_dane_needs_the_ad_bit_and_skips_unknown_parameters(world: World) -> None:
    leaf = make_leaf(world.ca, "mx1.dest.test")
    wrong = f"3 1 1 {'00' * 32}"
    _dane_zone(world, [wrong], secure=False)  # no AD bit: TLSA ignored, opportunistic TLS
    assert _run(world, Script(tls=_server_ctx(world.tmp, leaf)), dnssec=True)[0][0].status == "delivered"
    _dane_zone(world, ["3 9 1 00", "7 1 1 " + "00" * 32])  # secure, nothing usable: TLS still required
    results, peer, _ = _run(world, Script(tls=None), dnssec=True)
    assert results[0].status == "deferred" and results[0].reply.enhanced == "4.7.5" and peer.received == []


def test_requiretls_without_policy_bounces_5_7_30(world: World) -> None:
    world.dns.zone.pop("_mta-sts.dest.test")
    env = Envelope(SENDER, [Recipient(BOB)], requiretls=True)
    results, peer, _ = _run(world, Script(tls=_server_ctx(world.tmp, make_leaf(world.ca, "mx1.dest.test"))), env)
    assert results[0].status == "failed" and results[0].reply.enhanced == "5.7.30"
    assert peer.received == []


def test_requiretls_is_passed_on_to_an_authenticated_host(world: World) -> None:
    env = Envelope(SENDER, [Recipient(BOB)], requiretls=True)
    ctx = _server_ctx(world.tmp, make_leaf(world.ca, "mx1.dest.test"))
    results, peer, _ = _run(world, Script(tls=ctx, extensions=(*DEFAULT_EXTS, "REQUIRETLS")), env)
    assert results[0].status == "delivered", results[0].reply
    assert peer.received[0].mail.endswith("REQUIRETLS")
    # a host that does not offer REQUIRETLS: returned with 5.7.30 (RFC 8689 §5)
    results, peer, _ = _run(world, Script(tls=ctx), env)
    assert results[0].status == "failed" and results[0].reply.enhanced == "5.7.30" and peer.received == []


def test_pigeon_route_shows_the_mta_sts_policy_and_the_tlsa_records(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from pigeon.admin import route_cmd
    from pigeon.config import parse_config

    leaf = make_leaf(world.ca, "mx1.dest.test")
    tlsa = f"3 1 1 {association(leaf.der, 1, 1).hex()}"
    world.dns.zone["_25._tcp.mx1.dest.test"] = [("TLSA", tlsa), ("TLSA", "1 0 0 00")]
    world.dns.secure.update({"dest.test", "_25._tcp.mx1.dest.test"})
    host, port = world.dns.endpoint

    def route(dnssec: bool) -> str:
        text = (f'hostname = "mx.sender.test"\ndata_dir = "data"\ndomains = ["sender.test"]\n'
                f'[dns]\nnameservers = ["{host}:{port}"]\ndnssec = {"true" if dnssec else "false"}\n'
                f'[delivery]\ntls_ca_file = "{world.ca_file}"\nmta_sts_port = {world.https_port}\n')
        config = parse_config(text, str(world.tmp / "pigeon.toml"), world.tmp)
        code = route_cmd.route(argparse.Namespace(address="bob@dest.test"), config)
        assert code == 0
        return capsys.readouterr().out

    out = route(dnssec=True)
    assert "MTA-STS: policy id 20261207: mode enforce, mx mx1.dest.test, max_age 86400" in out
    assert f"mx1.dest.test: DANE, TLSA _25._tcp.mx1.dest.test: {tlsa}" in out  # the unusable 1 0 0 is not shown
    out = route(dnssec=False)
    assert "DANE: not used ([dns] dnssec = false)" in out
    assert "mx1.dest.test: MTA-STS enforce: matches the policy; verified TLS required" in out
