"""All checks of one message through the real resolver against a loopback DNS server."""

from __future__ import annotations

import asyncio

from pigeon.clocks import FakeClock
from pigeon.dns.resolver import DnsResolver
from pigeon.mailauth import check_message
from pigeon.mailauth.authres import authentication_results, clauses
from tests.unit.dns.zone_server import ZoneServer
from tests.unit.mailauth.keys import MESSAGE, ed25519_key, rsa_key, sign

ZONE = {
    "example.net": [("TXT", "v=spf1 ip4:127.0.0.2 -all")],
    "sel._domainkey.example.net": [("TXT", rsa_key()[1])],
    "ed._domainkey.example.net": [("TXT", ed25519_key()[1])],
    "_dmarc.example.net": [("TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@example.net")],
}


def test_pass_fail_and_the_header() -> None:
    with ZoneServer(ZONE) as srv:
        dns = DnsResolver([srv.endpoint], FakeClock(), lifetime=2.0, try_timeout=1.0)

        async def run() -> None:
            signed = sign(sign(MESSAGE, "example.net", "ed", ed=True), "example.net")
            ok = await check_message(dns, "127.0.0.2", "u@example.net", "out.example.net", signed, sample=0.5)
            assert (ok.spf.result, [d.result for d in ok.dkim], ok.dmarc.result, ok.arc.result) == (
                "pass", ["pass", "pass"], "pass", "none")
            header = authentication_results("mx.example.org", clauses(ok.spf, ok.dkim, ok.dmarc, ok.arc))
            assert b"dmarc=pass (p=reject) header.from=example.net" in header
            # a stranger's IP, unsigned: SPF fails, DMARC fails, the policy is reject
            bad = await check_message(dns, "127.0.0.9", "u@example.net", "x.test", MESSAGE, sample=0.5)
            assert (bad.spf.result, bad.dkim, bad.dmarc.result, bad.dmarc.disposition) == ("fail", (), "fail", "reject")
            # DKIM alone carries DMARC through a forwarder's IP
            fwd = await check_message(dns, "127.0.0.9", "", "fwd.test", signed, sample=0.5)
            assert (fwd.spf.result, fwd.dmarc.result, fwd.dmarc.dkim_aligned) == ("none", "pass", True)
            # two From fields: no DMARC pass possible
            two = await check_message(dns, "127.0.0.2", "u@example.net", "h", b"From: a@example.net\r\n" + signed,
                                      sample=0.5)
            assert (two.from_domain, two.dmarc.result) == (None, "permerror")

        asyncio.run(run())
