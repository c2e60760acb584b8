"""Where mail for a domain goes next: DNS MX routing (RFC 5321 §5.1), smarthost, address literals.

Rules:
1. ``Router.route(domain)`` returns the hosts to try, in order, each with its addresses. MX
   records are sorted by preference, lowest first; equal preferences are shuffled (RFC 5321
   §5.1: "randomize" among equal preferences to spread the load).
2. No MX record → the domain itself is the only host (implicit MX, RFC 5321 §5.1), preference 0.
3. Null MX (a single ``0 .``, RFC 7505 §3) → ``PermanentError`` ``556 5.1.10``.
4. NXDOMAIN for the domain → ``PermanentError`` ``550 5.1.2``; SERVFAIL/timeout →
   ``TemporaryError`` ``451 4.4.3``.
5. An MX target that is a CNAME is followed, with a log line (Postfix does the same). An MX
   target written as an IP address is not a host name (RFC 5321 §5.1: it MUST NOT be used as
   one): it is skipped with a warning, as Postfix's ``valid_rr_name`` does.
6. Self in the MX list (our ``hostname``, or one of its addresses is one we listen on): only hosts
   with a strictly lower preference than our own best are kept (RFC 5321 §5.1). None left →
   ``PermanentError`` ``554 5.4.6`` (routing loop, RFC 3463).
7. An address literal ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]`` is the host itself (RFC 5321
   §4.1.3); one of our own addresses there is a loop (5.4.6).
8. UTF-8 domains are turned into A-labels first (``to_ascii``) with the ``idna`` package
   (IDNA 2008, RFC 5891, with the UTS #46 mapping), a declared dependency: Python's built-in
   ``idna`` codec is IDNA 2003 and maps ``faß.de`` to ``fass.de``, another domain.
9. ``smarthost`` (``host[:port]``) replaces MX routing for every domain: its A/AAAA records are
   used directly (no MX lookup, like Postfix's ``[host]``); port defaults to ``remote_port``.
10. MX hosts use ``remote_port`` (default 25).

What can go wrong: DNS errors become ``TemporaryError``/``PermanentError`` carrying the reply the
recipients get; a host whose addresses cannot be found is kept with an empty address tuple and
the reason in ``error``, so that the others can still be tried.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

import idna

from pigeon.core.results import PermanentError, TemporaryError
from pigeon.dns.resolver import DnsError, DnsPermError, DnsTempError, NoSuchDomain, Resolver
from pigeon.proto.smtp.reply import Reply

log = logging.getLogger(__name__)

C556_NULL_MX = Reply(556, "5.1.10", "Recipient address has null MX")  # RFC 7505 §4.2
C550_NO_SUCH_DOMAIN = Reply(550, "5.1.2", "Domain not found")  # RFC 3463 X.1.2
C451_DNS_FAILURE = Reply(451, "4.4.3", "DNS lookup failed, will retry")  # RFC 3463 X.4.3
C554_NO_ROUTE = Reply(554, "5.4.4", "Unable to route: no address for the mail exchanger")  # X.4.4
C554_MAIL_LOOP = Reply(554, "5.4.6", "Mail for this domain loops back to myself")  # RFC 3463 X.4.6
C553_BAD_DOMAIN = Reply(553, "5.1.2", "Domain name cannot be converted to an ASCII DNS name")


IDNA_IMPLEMENTATION = "idna (IDNA 2008)"


def to_ascii(domain: str) -> str:
    """The A-label form of ``domain`` (Rule 8). Raises ValueError when it cannot be converted."""
    domain = domain.rstrip(".")
    if domain.isascii() or domain.startswith("["):
        return domain.lower()
    try:
        return bytes(idna.encode(domain, uts46=True)).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError) as exc:  # IDNAError is a UnicodeError today
        raise ValueError(f"{domain!r}: not a valid internationalised domain name ({exc})") from None


def literal_address(domain: str) -> str | None:
    """The IP inside an address literal (Rule 7), or None if ``domain`` is not one."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str  # the MX host name (A-label), the smarthost, or the literal "[192.0.2.1]"
    preference: int
    addresses: tuple[str, ...]
    port: int
    error: str = ""  # why ``addresses`` is empty
    error_temporary: bool = False  # the lookup may succeed later (SERVFAIL, timeout)
    implicit: bool = False  # the domain itself, for lack of MX records (Rule 2)

    def label(self, address: str) -> str:
        """``mx.example.net[192.0.2.1]:25``: the ``host`` of a RecipientResult."""
        return f"{self.name}[{address}]:{self.port}"


@dataclass(frozen=True, slots=True)
class RouteSettings:
    hostname: str  # our own name, as in the config
    self_addresses: frozenset[str] = frozenset()  # addresses we listen on (Rule 6)
    remote_port: int = 25  # RFC 5321 §4.5.4.2: SMTP relay uses port 25
    smarthost: tuple[str, int] | None = None  # (host, port) replacing MX routing (Rule 9)


def _normalise_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


class Router:
    def __init__(self, resolver: Resolver, settings: RouteSettings,
                 rng: random.Random | None = None) -> None:
        self.resolver = resolver
        self.settings = settings
        self._rng = rng or random.Random()
        self._self_ips = frozenset(_normalise_ip(a) for a in settings.self_addresses)

    def _is_self(self, name: str, addresses: Iterable[str]) -> bool:
        if name.lower().rstrip(".") == self.settings.hostname.lower().rstrip("."):
            return True
        return any(_normalise_ip(a) in self._self_ips for a in addresses)

    async def route(self, domain: str) -> list[MxHost]:
        """The hosts to try for ``domain``, best first. Raises Temporary/PermanentError."""
        if self.settings.smarthost is not None:
            host, port = self.settings.smarthost
            return [await self._smarthost(host, port)]
        literal = literal_address(domain)
        if literal is not None:
            if _normalise_ip(literal) in self._self_ips:
                raise PermanentError(C554_MAIL_LOOP.with_text(f"Mail for {domain} loops back to myself"))
            return [MxHost(domain, 0, (literal,), self.settings.remote_port)]
        try:
            name = to_ascii(domain)
        except ValueError as exc:
            raise PermanentError(C553_BAD_DOMAIN.with_text(str(exc))) from None
        try:
            records = await self.resolver.mx(name)
        except NoSuchDomain:
            raise PermanentError(C550_NO_SUCH_DOMAIN.with_text(f"Domain {name} not found (NXDOMAIN)")) from None
        except DnsPermError as exc:
            raise PermanentError(C550_NO_SUCH_DOMAIN.with_text(f"{name}: {exc}")) from None
        except DnsTempError as exc:
            raise TemporaryError(C451_DNS_FAILURE.with_text(f"MX lookup for {name} failed: {exc}")) from None
        if any(r.host == "" for r in records):
            # RFC 7505 §3: a null MX is the only record; treat it as authoritative even if not alone.
            raise PermanentError(C556_NULL_MX.with_text(f"Domain {name} does not accept mail (null MX)"))
        if not records:
            return [await self._implicit(name)]
        valid = []
        for r in records:
            if literal_address(f"[{r.host}]") is not None:
                log.warning("route: %s: numeric host name in MX record (%d %s); skipped",
                            name, r.preference, r.host)  # Rule 5
                continue
            valid.append(r)
        if not valid:
            raise TemporaryError(C451_DNS_FAILURE.with_text(f"{name}: no valid MX host name"))
        self._rng.shuffle(valid)
        valid.sort(key=lambda r: r.preference)  # stable: equal preferences stay shuffled (Rule 1)
        hosts = await asyncio.gather(*(self._resolve_mx(r.host, r.preference) for r in valid))
        own = [h.preference for h in hosts if self._is_self(h.name, h.addresses)]
        if own:
            limit = min(own)
            hosts = [h for h in hosts if h.preference < limit]  # Rule 6
            if not hosts:
                raise PermanentError(C554_MAIL_LOOP.with_text(
                    f"Mail for {name} loops back to myself (best MX preference {limit} is us)"))
        return list(hosts)

    async def _resolve_mx(self, host: str, preference: int) -> MxHost:
        port = self.settings.remote_port
        try:
            addrs = await self.resolver.addresses(host)
        except DnsError as exc:
            log.warning("route: MX host %s: %s", host, exc)
            return MxHost(host, preference, (), port, error=str(exc),
                          error_temporary=isinstance(exc, DnsTempError))
        return MxHost(host, preference, tuple(addrs), port,
                      error="" if addrs else f"{host}: no A/AAAA record")

    async def _implicit(self, name: str) -> MxHost:
        try:
            addrs = await self.resolver.addresses(name)
        except NoSuchDomain:
            raise PermanentError(C550_NO_SUCH_DOMAIN.with_text(f"Domain {name} not found (NXDOMAIN)")) from None
        except DnsPermError as exc:
            raise PermanentError(C554_NO_ROUTE.with_text(f"{name}: {exc}")) from None
        except DnsTempError as exc:
            raise TemporaryError(C451_DNS_FAILURE.with_text(f"Address lookup for {name} failed: {exc}")) from None
        if not addrs:
            raise PermanentError(C554_NO_ROUTE.with_text(f"{name} has no MX and no A/AAAA record"))
        if self._is_self(name, addrs):
            raise PermanentError(C554_MAIL_LOOP.with_text(f"Mail for {name} loops back to myself"))
        return MxHost(name, 0, tuple(addrs), self.settings.remote_port, implicit=True)

    async def _smarthost(self, host: str, port: int) -> MxHost:
        literal = literal_address(f"[{host}]")
        if literal is not None:
            return MxHost(host, 0, (literal,), port)
        try:
            addrs = await self.resolver.addresses(to_ascii(host))
        except DnsTempError as exc:
            raise TemporaryError(C451_DNS_FAILURE.with_text(f"smarthost {host}: {exc}")) from None
        except DnsError as exc:
            # A misconfigured smarthost is the operator's problem, not the sender's: keep the mail.
            raise TemporaryError(C451_DNS_FAILURE.with_text(f"smarthost {host}: {exc}")) from None
        if not addrs:
            raise TemporaryError(C451_DNS_FAILURE.with_text(f"smarthost {host} has no A/AAAA record"))
        return MxHost(host, 0, tuple(addrs), port)
