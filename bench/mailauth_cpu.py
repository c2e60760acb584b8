#!/usr/bin/env python3
"""CPU per message of the inbound authentication checks (issue 16), with a warm DNS cache.

The sender domain publishes SPF (``ip4`` + an ``include``), DKIM keys (RSA 2048 and ed25519) and
DMARC ``p=reject`` in a loopback DNS server (``tests/unit/dns/zone_server.py``, dnslib). The real
resolver (``pigeon.dns.resolver.DnsResolver``) asks it once; then every message is checked from
the cache: the script asserts the server saw no query during the measured runs, so the process
CPU measured (``time.process_time``) is the checks' own work.

Measured per message (10 KB body, DKIM-signed, relaxed/relaxed), median of ``--runs`` runs of
``--messages`` messages each:
  * ``all``: ``check_message`` = SPF + DKIM + ARC (none present) + header From + DMARC;
  * and each part alone: ``spf``, ``dkim``, ``dmarc`` (given SPF/DKIM results), ``arc``.
for an RSA-2048 signature, for an ed25519 one, and for the RSA-signed message after two
forwarders added ARC sets (``rsa+arc2``: ``arc`` then verifies a 2-set chain).

    PYTHONPATH=$PWD/src:$PWD /work/main/.venv/bin/python bench/mailauth_cpu.py --messages 2000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dkim  # noqa: E402

from pigeon.clocks import SystemClock  # noqa: E402
from pigeon.dns.resolver import DnsResolver  # noqa: E402
from pigeon.mailauth import check_dmarc, check_message, check_spf, verify_arc, verify_dkim  # noqa: E402
from tests.unit.dns.zone_server import ZoneServer  # noqa: E402
from tests.unit.mailauth.keys import ed25519_key, rsa_key, sign  # noqa: E402

ZONE = {
    "example.net": [("TXT", "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all", 3600)],
    "_spf.example.net": [("TXT", "v=spf1 ip4:127.0.0.0/24 -all", 3600)],
    "rsa._domainkey.example.net": [("TXT", rsa_key()[1], 3600)],
    "ed._domainkey.example.net": [("TXT", ed25519_key()[1], 3600)],
    "_dmarc.example.net": [("TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@example.net", 3600)],
    "arc._domainkey.list.example": [("TXT", rsa_key()[1], 3600)],
    "arc._domainkey.fwd.example": [("TXT", rsa_key()[1], 3600)],
}
BODY = b"".join(b"Line %05d of a ten kilobyte message body, plain text, nothing special.....\r\n" % i
                for i in range(134))
MESSAGE = (b"From: Alice <alice@example.net>\r\nTo: bob@example.org\r\nSubject: benchmark\r\n"
           b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <bench@example.net>\r\n"
           b"Received: from out.example.net (out.example.net [127.0.0.2]) by mx.example.org\r\n\r\n" + BODY)


def seal(message: bytes, domain: str) -> bytes:
    """An ARC set added by a forwarder (dkimpy seals, as in tests/unit/mailauth/test_arc.py)."""
    arc = "pass" if b"ARC-Seal" in message else "none"
    message = f"Authentication-Results: mx.{domain}; dkim=pass header.d=example.net; arc={arc}\r\n".encode() + message
    fields = dkim.arc_sign(message, b"arc", domain.encode(), rsa_key()[0], f"mx.{domain}".encode(),
                           include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return b"".join(fields) + message


async def measure(n: int, work: Callable[[], Awaitable[object]]) -> float:
    """Microseconds of process CPU per call of ``work``."""
    start = time.process_time()
    for _ in range(n):
        await work()
    return (time.process_time() - start) / n * 1e6


async def bench(srv: ZoneServer, messages: int, runs: int) -> dict[str, list[float]]:
    dns = DnsResolver([srv.endpoint], SystemClock(), lifetime=2.0, try_timeout=1.0)
    signed = {"rsa": sign(MESSAGE, "example.net", "rsa"), "ed25519": sign(MESSAGE, "example.net", "ed", ed=True)}
    signed["rsa+arc2"] = seal(seal(signed["rsa"], "list.example"), "fwd.example")
    results: dict[str, list[float]] = {}
    for kind, msg in signed.items():
        auth = await check_message(dns, "127.0.0.2", "alice@example.net", "out.example.net", msg, sample=0.5)
        assert (auth.spf.result, auth.dkim[0].result, auth.dmarc.result) == ("pass", "pass", "pass"), auth
        assert auth.arc.result == ("pass" if "arc" in kind else "none"), auth.arc
        spf, dkim_results = auth.spf, auth.dkim
        before = len(srv.queries)
        work: dict[str, Callable[[], Awaitable[object]]] = {
            "all": lambda m=msg: check_message(dns, "127.0.0.2", "alice@example.net", "out.example.net", m,
                                               sample=0.5),
            "spf": lambda: check_spf(dns, "127.0.0.2", "alice@example.net", "out.example.net"),
            "dkim": lambda m=msg: verify_dkim(dns, m, prefer_domain="example.net"),
            "dmarc": lambda: check_dmarc(dns, "example.net", spf, dkim_results, sample=0.5),
            "arc": lambda m=msg: verify_arc(dns, m),
        }
        for _ in range(runs):
            for name, fn in work.items():
                results.setdefault(f"{kind} {name}", []).append(await measure(messages, fn))
        assert len(srv.queries) == before, "the cache was not warm: DNS was queried during the runs"
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with ZoneServer(ZONE) as srv:
        results = asyncio.run(bench(srv, args.messages, args.runs))
    print(f"CPU per message, microseconds (median of {args.runs} runs x {args.messages} messages; min..max)")
    for name, values in results.items():
        print(f"  {name:14s} {statistics.median(values):8.1f}   ({min(values):.1f}..{max(values):.1f})")


if __name__ == "__main__":
    main()
