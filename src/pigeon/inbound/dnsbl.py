"""DNS blocklists: is the client's address listed in one of ``[inbound] dnsbl``?

Rules:
1. The query name is the address reversed under the zone: IPv4 by octets
   (``192.0.2.99`` → ``99.2.0.192.zone``, RFC 5782 §2.1), IPv6 by nibbles (RFC 5782 §2.4).
2. Listed means an A record in ``127.0.0.0/8`` (RFC 5782 §2.1); any other answer (a zone that
   answers everything with a web server's address, a typo-squatted zone) is not a listing.
3. A failure (timeout, SERVFAIL, a malformed answer) never refuses mail: it is logged and
   counted as "not listed". Every zone is asked at once; the whole lookup is bounded by
   ``timeout``.
4. The TXT record at the same name, when there is one, is the reason quoted in the reply
   (cut to ``MAX_REASON`` printable ASCII characters: it goes into an SMTP reply line).
5. The refusal is ``554 5.7.1`` naming the zone (RFC 5782 §2.1 suggests so; Postfix says
   "Service unavailable; Client host [ip] blocked using zone").

What can go wrong: nothing raises from ``lookup``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pigeon.core.reply import Reply
from pigeon.inbound.seams import DnsblDns

log = logging.getLogger(__name__)

# Rule 4: the reply line is at most 512 octets (RFC 5321 §4.5.3.1.5), with the zone and the
# address before the reason.
MAX_REASON = 200
LISTED = ipaddress.ip_network("127.0.0.0/8")  # rule 2


@dataclass(frozen=True, slots=True)
class Listing:
    zone: str
    address: str  # the A record of the listing (127.0.0.x: the list's reason code)
    reason: str  # the TXT record, or ""

    def reply(self, client_ip: str) -> Reply:
        text = f"Service unavailable; Client host [{client_ip}] blocked using {self.zone}"
        if self.reason:
            text += f"; {self.reason}"
        return Reply(554, "5.7.1", text)


def query_name(ip: str, zone: str) -> str | None:
    """Rule 1; None for text that is not an IP address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:192.0.2.1 is an IPv4 client
    if isinstance(addr, ipaddress.IPv4Address):
        labels = str(addr).split(".")
    else:
        labels = list(addr.exploded.replace(":", ""))
    return ".".join(reversed(labels)) + "." + zone


def _clean(text: bytes) -> str:
    out = "".join(c if " " <= c <= "~" else "?" for c in text.decode("ascii", "replace"))
    return out[:MAX_REASON]


async def _one(dns: DnsblDns, name: str, zone: str) -> Listing | None:
    try:
        answers = await dns.a(name)
    except Exception as exc:  # rule 3: NXDOMAIN is "not listed"; other failures too
        if type(exc).__name__ != "NoSuchDomain":
            log.info("dnsbl: %s: lookup failed (%s); not counted as listed", name, exc)
        return None
    listed = [a for a in answers if _in_listed(a)]
    if not listed:
        if answers:
            log.warning("dnsbl: %s answered %s, outside 127.0.0.0/8; ignored", name, answers)
        return None
    reason = ""
    try:
        texts = await dns.txt(name)
        if texts:
            reason = _clean(texts[0])
    except Exception as exc:
        log.info("dnsbl: %s: TXT lookup failed (%s)", name, exc)
    return Listing(zone, listed[0], reason)


def _in_listed(text: str) -> bool:
    try:
        return ipaddress.ip_address(text) in LISTED
    except ValueError:
        return False


async def lookup(dns: DnsblDns, ip: str, zones: Sequence[str], timeout: float) -> Listing | None:
    """The first listing in ``zones`` order, or None (rules 1-4)."""
    names = [(query_name(ip, zone), zone) for zone in zones]
    tasks = [_one(dns, name, zone) for name, zone in names if name is not None]
    if not tasks:
        return None
    try:
        async with asyncio.timeout(timeout):
            found = await asyncio.gather(*tasks)
    except TimeoutError:
        log.info("dnsbl: lookups for %s took over %.0f s; not counted as listed", ip, timeout)
        return None
    for listing in found:
        if listing is not None:
            return listing
    return None
