"""DNS for mail routing: the ``Resolver`` seam, its errors, and the real dnspython implementation.

Rules:
1. ``Resolver.mx(domain)`` returns the domain's MX records (``MxRecord``), unsorted, exactly as
   published; ``[]`` when the name exists but has no MX (then the caller uses the implicit MX,
   RFC 5321 §5.1). The null MX ``0 .`` (RFC 7505) comes back as ``MxRecord(0, "")``.
2. ``Resolver.addresses(host)`` returns the host's A then AAAA addresses as text, ``[]`` when the
   name exists without addresses. CNAME chains are followed (dnspython does, and logs here).
3. Errors: NXDOMAIN → ``NoSuchDomain`` (permanent); any other permanent DNS refusal (YXDOMAIN,
   a name that cannot be a DNS name) → ``DnsPermError``; SERVFAIL, REFUSED from every server,
   timeouts → ``DnsTempError``. ``NoSuchDomain`` is a ``DnsPermError``.
4. ``DnsResolver`` asks ``[dns] nameservers`` (``address:port``) when given, else the system
   resolver (``/etc/resolv.conf``). Positive answers are cached for their TTL (capped), negative
   answers (NXDOMAIN, no records) for ``NEGATIVE_TTL``; temporary errors are never cached. Time
   comes from the injected ``Clock``. ``cached(name, rdtype)`` tells whether an answer (or a
   cached NXDOMAIN) is there now, without asking anyone.
5. Names are passed in A-label form (``pigeon.delivery.relay_idna``); this module never
   converts them.
6. For mail authentication (``pigeon.mailauth.MailAuthDns``, RFC 7208 §4.4/§5 semantics) the
   resolver also answers ``txt(name)`` (each record's character-strings joined, as bytes:
   RFC 7208 §3.3, RFC 6376 §3.6.2.2), ``a(name)``/``aaaa(name)`` (one family each) and
   ``ptr(address)`` (the reverse names of an IP address, lower-case, no trailing dot). They share
   the cache and the errors of rule 3: NXDOMAIN → ``NoSuchDomain``, a name without records of
   the type → ``[]``, SERVFAIL/timeout → ``DnsTempError``. Nothing here decides SPF's "void
   lookup" or "temperror": the caller does, from these three outcomes.
7. An answer is bounded by the DNS message size (64 KiB over TCP, RFC 1035 §4.2.2); a TXT answer
   is additionally capped at ``MAX_TXT_ANSWER`` bytes in total, beyond which it is a
   ``DnsPermError`` (a "huge answer" must not feed megabytes into the SPF/DKIM parsers).
8. ``secure(name, "MX" | "TLSA")`` (DANE, RFC 7672 §2.1) asks with the DO bit and reports the AD
   bit of the answer (``SecureAnswer.authenticated``). The AD bit is trusted as Postfix's
   ``smtp_dns_support_level = dnssec`` does: only meaningful when ``[dns] nameservers`` are
   validating resolvers reached over a trusted path (loopback). TLSA data come back as
   ``"usage selector mtype hexdata"``, MX as ``"preference host"``. Cached like rule 4, under
   its own key.

What can go wrong: only the three error classes above leave the lookups; anything
unexpected from dnspython is logged and raised as ``DnsTempError`` (never lost mail).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from pigeon.core.clock import Clock

log = logging.getLogger(__name__)

# RFC 2308 §5 lets a resolver cache negative answers up to the SOA minimum (often hours); one
# minute keeps a freshly published zone usable quickly while sparing the servers a storm.
NEGATIVE_TTL = 60.0
# RFC 8767 §4 suggests capping TTLs at 7 days; mail routing should notice changes sooner: 1 day.
MAX_TTL = 86400.0
# Entries kept in the cache; each is a few hundred bytes. 10,000 covers a busy relay's daily mix.
MAX_CACHE_ENTRIES = 10_000
# RFC 1123 §6.1.3.3 / dnspython default: give up on one query after this many seconds in total.
DEFAULT_LIFETIME = 10.0
# One try against one server before the next is asked (dnspython's default is 2 s).
DEFAULT_TRY_TIMEOUT = 3.0
# Rule 7: the largest TXT answer accepted, all records together. A DNS message carries at most
# 65,535 octets (RFC 1035 §4.2.2); real SPF/DKIM/DMARC records are well under 4 KiB (a 4096-bit
# RSA key is ~800 octets of base64), so 16 KiB leaves room for any honest publisher.
MAX_TXT_ANSWER = 16_384
# The EDNS buffer size of DNS Flag Day 2020 (avoids fragmentation); DNSSEC answers need EDNS.
EDNS_PAYLOAD = 1232


class DnsError(Exception):
    """Base of the resolver's errors."""


class DnsTempError(DnsError):
    """SERVFAIL, timeout, no server answered: try again later."""


class DnsPermError(DnsError):
    """A permanent DNS failure."""


class NoSuchDomain(DnsPermError):
    """NXDOMAIN: the name does not exist (RFC 1035 §4.1.1 RCODE 3)."""


@dataclass(frozen=True, slots=True, order=True)
class MxRecord:
    preference: int
    host: str  # lower-case, no trailing dot; "" is the null MX "." (RFC 7505)


@dataclass(frozen=True, slots=True)
class SecureAnswer:
    """Rule 7: the records as text, and whether the resolver said they were validated (AD)."""

    records: tuple[str, ...]
    authenticated: bool


class Resolver(Protocol):
    """What mail routing asks of DNS."""

    async def mx(self, domain: str) -> list[MxRecord]: ...

    async def addresses(self, host: str) -> list[str]: ...


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() if name != dns.name.root else ""


def _ptr_name(address: str) -> dns.name.Name:
    try:
        return dns.reversename.from_address(address)
    except (ValueError, dns.exception.SyntaxError) as exc:
        raise DnsPermError(f"{address!r} is not an IP address") from exc


class _Cache:
    """A TTL cache keyed by (name, type); the value is a list of strings or a raised error."""

    def __init__(self, clock: Clock, limit: int = MAX_CACHE_ENTRIES) -> None:
        self._clock = clock
        self._limit = limit
        self._items: OrderedDict[tuple[str, str], tuple[float, list[str] | DnsPermError]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> list[str] | DnsPermError | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock.now():
            del self._items[key]
            return None
        return value

    def put(self, key: tuple[str, str], value: list[str] | DnsPermError, ttl: float) -> None:
        if ttl <= 0:
            return
        self._items[key] = (self._clock.now() + min(ttl, MAX_TTL), value)
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class DnsResolver:
    """``Resolver`` on dnspython's asyncio resolver, with a TTL-honouring cache (Rule 4)."""

    def __init__(self, nameservers: Sequence[tuple[str, int]], clock: Clock,
                 lifetime: float = DEFAULT_LIFETIME, try_timeout: float = DEFAULT_TRY_TIMEOUT) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                          for host, port in nameservers]
        else:
            self._resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        self._resolver.lifetime = lifetime
        self._resolver.timeout = try_timeout
        self._cache = _Cache(clock)
        self._secure = dns.asyncresolver.Resolver(configure=False)  # rule 7: DO set, AD read
        self._secure.nameservers = self._resolver.nameservers
        self._secure.lifetime = lifetime
        self._secure.timeout = try_timeout
        self._secure.use_edns(0, dns.flags.DO, EDNS_PAYLOAD)
        self._secure.flags = dns.flags.RD | dns.flags.AD  # RFC 6840 §5.7: ask for the AD bit

    def cached(self, name: str, rdtype: str) -> bool:
        """Rule 4: the cache holds an unexpired answer for (name, rdtype)."""
        return self._cache.get((name.lower().rstrip("."), rdtype)) is not None

    async def secure(self, name: str, rdtype: str) -> SecureAnswer:
        """Rule 8."""
        values = await self._lookup(name, rdtype, secure=True)
        return SecureAnswer(tuple(values[1:]), values[:1] == ["ad"])

    async def mx(self, domain: str) -> list[MxRecord]:
        texts = await self._lookup(domain, "MX")
        out = []
        for text in texts:
            pref, _, host = text.partition(" ")
            out.append(MxRecord(int(pref), host))
        return out

    async def addresses(self, host: str) -> list[str]:
        a, aaaa = await asyncio.gather(self._lookup(host, "A"), self._lookup(host, "AAAA"),
                                       return_exceptions=True)
        results: list[str] = []
        temp: DnsTempError | None = None
        for part in (a, aaaa):
            if isinstance(part, NoSuchDomain):
                raise part
            if isinstance(part, DnsTempError):
                temp = part
            elif isinstance(part, BaseException):
                raise part
            else:
                results.extend(part)
        if temp is not None and not results:
            raise temp
        if temp is not None:
            log.warning("dns: %s: one address family failed (%s); using %s", host, temp, results)
        return results

    async def a(self, name: str) -> list[str]:
        """IPv4 addresses of ``name`` (rule 6)."""
        return await self._lookup(name, "A")

    async def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses of ``name`` (rule 6)."""
        return await self._lookup(name, "AAAA")

    async def txt(self, name: str) -> list[bytes]:
        """TXT records of ``name``, each one's strings joined (rule 6)."""
        # The cache holds text: latin-1 maps every byte to one character and back unchanged.
        return [value.encode("latin-1") for value in await self._lookup(name, "TXT")]

    async def ptr(self, address: str) -> list[str]:
        """The reverse names of an IPv4/IPv6 address (rule 6)."""
        return await self._lookup(_ptr_name(address).to_text(omit_final_dot=True), "PTR")

    async def _lookup(self, name: str, rdtype: str, secure: bool = False) -> list[str]:
        key = (name.lower().rstrip("."), rdtype + ("+AD" if secure else ""))
        cached = self._cache.get(key)
        if isinstance(cached, DnsPermError):
            raise cached
        if cached is not None:
            return list(cached)
        try:
            qname = dns.name.from_text(key[0] + ".") if key[0] else dns.name.root
            resolver = self._secure if secure else self._resolver
            answer = await resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            err = NoSuchDomain(f"{key[0]}: no such domain (NXDOMAIN)")
            self._cache.put(key, err, NEGATIVE_TTL)
            raise err from None
        except dns.resolver.YXDOMAIN:
            raise DnsPermError(f"{key[0]}: name too long after DNAME substitution (YXDOMAIN)") from None
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel) as exc:
            raise DnsPermError(f"{key[0]!r} is not a valid DNS name: {exc}") from None
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"{key[0]}/{rdtype}: no server answered (SERVFAIL or REFUSED): {exc}") from None
        except dns.exception.Timeout:
            raise DnsTempError(f"{key[0]}/{rdtype}: DNS timeout") from None
        except Exception as exc:
            log.exception("dns: unexpected error looking up %s/%s", key[0], rdtype)
            raise DnsTempError(f"{key[0]}/{rdtype}: DNS error: {exc}") from None
        rrset = answer.rrset
        head = (["ad" if answer.response.flags & dns.flags.AD else "-"]) if secure else []
        if rrset is None:
            self._cache.put(key, head, NEGATIVE_TTL)
            return list(head)
        if answer.canonical_name != answer.qname:
            log.info("dns: %s is a CNAME for %s; following it", key[0], _host_text(answer.canonical_name))
        values: list[str] = list(head)
        size = 0
        for rdata in rrset:
            if rdtype == "MX":
                values.append(f"{int(rdata.preference)} {_host_text(rdata.exchange)}")
            elif rdtype == "TXT":
                joined = b"".join(rdata.strings)
                size += len(joined)
                if size > MAX_TXT_ANSWER:
                    raise DnsPermError(f"{key[0]}/TXT: answer larger than {MAX_TXT_ANSWER} bytes")
                values.append(joined.decode("latin-1"))
            elif rdtype == "PTR":
                values.append(_host_text(rdata.target))
            elif rdtype == "TLSA":
                values.append(f"{int(rdata.usage)} {int(rdata.selector)} {int(rdata.mtype)} {rdata.cert.hex()}")
            else:
                values.append(str(rdata.address))
        self._cache.put(key, values, float(rrset.ttl))
        return list(values)
