"""SPF: is this client IP allowed to send for that domain? (RFC 7208, ``check_host()``)

Rules:
1. ``check_spf(dns, ip, mail_from, helo)`` checks the MAIL FROM identity, or the HELO identity
   when MAIL FROM is ``<>`` (RFC 7208 §2.4: the sender is then ``postmaster@<helo>``). A sender
   without a local-part gets ``postmaster`` (§4.3). An IPv4-mapped IPv6 client is checked as
   the IPv4 address it carries (§5). No client is passed for being on loopback or anywhere
   else: exemptions (``trusted_networks``) are the caller's decision.
2. Initial processing (§4.3): a domain that is malformed (empty label, label over 63 octets,
   a single label, an address literal) gives ``none`` without any DNS query; NXDOMAIN gives
   ``none``; a TXT lookup that fails temporarily gives ``temperror``; no ``v=spf1`` record gives
   ``none``; two of them, or a syntax error anywhere in the record, ``permerror`` (§4.5, §4.6).
3. Mechanisms are evaluated left to right; the first that matches gives its qualifier's result
   (``+`` pass, ``-`` fail, ``~`` softfail, ``?`` neutral, §4.6.2). ``include`` matches only on
   the included record's pass; its temperror propagates; its permerror or none is permerror
   (§5.2). ``redirect`` applies only when no mechanism matched; a target without a record is
   permerror (§6.1). Nothing matched and no redirect: neutral (§4.7).
4. Limits (§4.6.4): ``include a mx ptr exists redirect`` count as DNS-querying terms, at most
   ``MAX_DNS_TERMS`` in the whole evaluation (includes and redirects included) or permerror;
   at most ``MAX_VOID_LOOKUPS`` of their queries may answer NXDOMAIN or no records, or permerror;
   an ``mx`` with more than ``MAX_MX_NAMES`` exchanges is permerror; ``ptr`` and ``%{p}`` check
   at most ``MAX_PTR_NAMES`` reverse names (the rest are ignored). Hence the number of DNS
   queries of one check is bounded: 10 terms × (1 + 10 address lookups) plus the PTR checks.
   An include loop ends on the term limit.
5. A temporary DNS error in a mechanism's lookup ends the whole check with ``temperror`` (§5);
   errors in ``ptr``'s and ``%{p}``'s reverse lookups only mean "no match"/"unknown" (§5.5).
6. ``exp=`` (§6.2) is fetched only when the result is ``fail``, from the record that produced the
   fail (a redirect's target, never an include's); any problem with it (DNS error, not exactly
   one TXT record, non-ASCII, bad macro) falls back to the default explanation. Its lookup is not
   counted against the limits.

What can go wrong: every failure ends in one of the seven results; no exception leaves
``check_spf`` except cancellation. DNS time is bounded by the resolver's lifetime per query.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Literal

from pigeon.mailauth.lookup import DnsPermError, DnsTempError, MailAuthDns, NoSuchDomain
from pigeon.mailauth.spf_syntax import (
    MacroContext,
    Mechanism,
    SpfSyntaxError,
    expand,
    parse_record,
    select_record,
    uses_p_macro,
    valid_domain,
)

log = logging.getLogger(__name__)

SpfResultKind = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 7208 §4.6.4: at most 10 mechanisms/modifiers that query DNS, per check_host() evaluation.
MAX_DNS_TERMS = 10
# RFC 7208 §4.6.4: "SPF implementations SHOULD limit 'void lookups' to two".
MAX_VOID_LOOKUPS = 2
# RFC 7208 §4.6.4: an mx mechanism MUST NOT lead to more than 10 address lookups.
MAX_MX_NAMES = 10
# RFC 7208 §4.6.4: "no more than 10 PTR looked up and checked" (ptr, %{p}).
MAX_PTR_NAMES = 10
# What a fail explains when the domain gives no exp= (RFC 7208 §6.2 leaves the text to us).
DEFAULT_EXPLANATION = "%{i} is not allowed to send mail as %{s} (SPF of %{d})"

_QUALIFIERS: dict[str, SpfResultKind] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


@dataclass(frozen=True)
class SpfResult:
    result: SpfResultKind
    identity: Literal["mailfrom", "helo"]
    domain: str  # the domain checked (MAIL FROM's domain, or the HELO name)
    sender: str  # the identity checked, e.g. "user@example.net" or "postmaster@helo.name"
    explanation: str = ""  # exp= text (fail) or the reason (for Received-SPF / logs)
    client_ip: str = ""  # the address checked (an IPv4-mapped IPv6 address as IPv4)
    helo: str = ""
    mechanism: str = ""  # the term that matched, as written ("" when none did)


class _Abort(Exception):
    """Ends the whole evaluation with temperror or permerror (rules 4, 5)."""

    def __init__(self, result: Literal["temperror", "permerror"], reason: str) -> None:
        super().__init__(reason)
        self.result: Literal["temperror", "permerror"] = result
        self.reason = reason


@dataclass(frozen=True)
class _Outcome:
    result: SpfResultKind
    reason: str = ""
    mechanism: str = ""
    explanation: str | None = None  # only for fail, when exp= gave one


class _Evaluation:
    """One ``check_host()`` with its counters (rule 4)."""

    def __init__(self, dns: MailAuthDns, ip: IpAddress, sender: str, helo: str,
                 receiver: str, now: float) -> None:
        self.dns = dns
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.receiver = receiver
        self.now = now
        self.terms = 0
        self.voids = 0
        self._validated: dict[str, str] = {}

    def context(self, domain: str, validated: str = "unknown") -> MacroContext:
        return MacroContext(self.sender, domain, self.ip, self.helo, self.receiver, int(self.now), validated)

    async def expand(self, spec: str, domain: str, *, exp: bool = False) -> str:
        validated = await self.validated_name(domain) if uses_p_macro(spec) else "unknown"
        return expand(spec, self.context(domain, validated), exp=exp)

    def count_term(self, term: str) -> None:
        self.terms += 1
        if self.terms > MAX_DNS_TERMS:
            raise _Abort("permerror", f"more than {MAX_DNS_TERMS} DNS-querying terms (at {term})")

    def count_void(self, name: str) -> None:
        self.voids += 1
        if self.voids > MAX_VOID_LOOKUPS:
            raise _Abort("permerror", f"more than {MAX_VOID_LOOKUPS} void DNS lookups (at {name})")

    async def check_host(self, domain: str) -> _Outcome:
        if not valid_domain(domain):
            return _Outcome("none", f"{domain!r} is not a valid domain name")
        try:
            txts = await self.dns.txt(domain)
        except NoSuchDomain:
            return _Outcome("none", f"{domain}: no such domain")
        except DnsTempError as exc:
            raise _Abort("temperror", f"{domain}: {exc}") from None
        except DnsPermError as exc:
            raise _Abort("permerror", f"{domain}: {exc}") from None
        try:
            text = select_record(txts)
            if text is None:
                return _Outcome("none", f"{domain}: no SPF record")
            record = parse_record(text)
        except SpfSyntaxError as exc:
            raise _Abort("permerror", f"{domain}: {exc}") from None
        for mech in record.mechanisms:
            if await self.matches(mech, domain):
                result = _QUALIFIERS[mech.qualifier]
                explanation = None
                if result == "fail" and record.exp is not None:
                    explanation = await self.explanation(record.exp, domain)
                return _Outcome(result, f"{domain}: matched {mech.text}", mech.text, explanation)
        if record.redirect is not None:
            self.count_term("redirect=" + record.redirect)
            target = await self.expand_target(record.redirect, domain)
            outcome = await self.check_host(target)
            if outcome.result == "none":
                raise _Abort("permerror", f"redirect={target}: {outcome.reason} (RFC 7208 §6.1)")
            return outcome
        return _Outcome("neutral", f"{domain}: no mechanism matched")

    async def expand_target(self, spec: str, domain: str) -> str:
        try:
            return await self.expand(spec, domain)
        except SpfSyntaxError as exc:
            raise _Abort("permerror", str(exc)) from None

    async def matches(self, mech: Mechanism, domain: str) -> bool:
        name = mech.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return mech.network is not None and mech.network.version == self.ip.version and self.ip in mech.network
        self.count_term(mech.text)
        target = domain if mech.domain_spec is None else await self.expand_target(mech.domain_spec, domain)
        if name == "include":
            outcome = await self.check_host(target)
            if outcome.result == "pass":
                return True
            if outcome.result in ("fail", "softfail", "neutral"):
                return False
            if outcome.result == "temperror":  # (raised as _Abort; kept for clarity)
                raise _Abort("temperror", outcome.reason)
            raise _Abort("permerror", f"include:{target}: {outcome.reason} (RFC 7208 §5.2)")
        if name == "a":
            return self.in_network(await self.addresses(target, mech, primary=True), mech)
        if name == "mx":
            return await self.mx_matches(target, mech)
        if name == "ptr":
            return await self.ptr_matches(target)
        # exists: an A query whatever the client's family (RFC 7208 §5.7)
        return bool(await self.query_a(target, primary=True))

    def in_network(self, addresses: list[str], mech: Mechanism) -> bool:
        prefix = mech.cidr4 if self.ip.version == 4 else mech.cidr6
        for text in addresses:
            try:
                net = ipaddress.ip_network((text, prefix), strict=False)
            except ValueError:
                log.info("spf: ignoring a malformed address %r", text)
                continue
            if net.version == self.ip.version and self.ip in net:
                return True
        return False

    async def query_a(self, name: str, *, primary: bool) -> list[str]:
        return await self._query(name, "A", primary=primary)

    async def addresses(self, name: str, mech: Mechanism | None, *, primary: bool) -> list[str]:
        return await self._query(name, "A" if self.ip.version == 4 else "AAAA", primary=primary)

    async def _query(self, name: str, rdtype: Literal["A", "AAAA"], *, primary: bool) -> list[str]:
        if not valid_domain(name):
            if primary:
                self.count_void(name)
            return []
        try:
            answer = await (self.dns.a(name) if rdtype == "A" else self.dns.aaaa(name))
        except NoSuchDomain:
            answer = []
        except DnsTempError as exc:
            raise _Abort("temperror", f"{name}/{rdtype}: {exc}") from None
        except DnsPermError as exc:
            log.info("spf: %s/%s: %s (no match)", name, rdtype, exc)
            answer = []
        if not answer and primary:
            self.count_void(name)
        return answer

    async def mx_matches(self, target: str, mech: Mechanism) -> bool:
        if not valid_domain(target):
            self.count_void(target)
            return False
        try:
            records = await self.dns.mx(target)
        except NoSuchDomain:
            records = []
        except DnsTempError as exc:
            raise _Abort("temperror", f"{target}/MX: {exc}") from None
        except DnsPermError as exc:
            log.info("spf: %s/MX: %s (no match)", target, exc)
            records = []
        if not records:
            self.count_void(target)
            return False
        if len(records) > MAX_MX_NAMES:
            raise _Abort("permerror", f"{target}: more than {MAX_MX_NAMES} MX records (RFC 7208 §4.6.4)")
        for record in sorted(records):
            if record.host and self.in_network(await self.addresses(record.host, mech, primary=False), mech):
                return True
        return False

    async def validated_names(self) -> list[str]:
        """The client's reverse names whose forward lookup gives the client back (§5.5)."""
        try:
            names = await self.dns.ptr(str(self.ip))
        except (DnsTempError, DnsPermError) as exc:  # NoSuchDomain is a DnsPermError
            log.info("spf: PTR of %s: %s (no match)", self.ip, exc)
            return []
        out: list[str] = []
        for name in names[:MAX_PTR_NAMES]:
            try:
                addrs = await self.addresses(name, None, primary=False)
            except _Abort as exc:  # a temporary error on one name: skip it (§5.5)
                log.info("spf: %s: %s (skipped)", name, exc.reason)
                continue
            if any(_same_ip(a, self.ip) for a in addrs):
                out.append(name.lower().rstrip("."))
        return out

    async def ptr_matches(self, target: str) -> bool:
        target = target.lower().rstrip(".")
        return any(n == target or n.endswith("." + target) for n in await self.validated_names())

    async def validated_name(self, domain: str) -> str:
        """``%{p}``: the validated name, preferring the domain, then a subdomain (§7.3)."""
        if domain not in self._validated:
            names = await self.validated_names()
            d = domain.lower().rstrip(".")
            choice = next((n for n in names if n == d), None) or next(
                (n for n in names if n.endswith("." + d)), None) or (names[0] if names else "unknown")
            self._validated[domain] = choice
        return self._validated[domain]

    async def explanation(self, spec: str, domain: str) -> str | None:
        """Rule 6: the exp= text, or None for the default."""
        try:
            target = await self.expand(spec, domain)
            if not valid_domain(target):
                return None
            txts = await self.dns.txt(target)
            if len(txts) != 1:
                return None
            return await self.expand(txts[0].decode("ascii"), domain, exp=True)
        except (DnsTempError, DnsPermError, SpfSyntaxError, UnicodeDecodeError, _Abort) as exc:
            log.info("spf: exp=%s for %s: %s (default explanation)", spec, domain, exc)
            return None


def _same_ip(text: str, ip: IpAddress) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def _client_ip(ip: str) -> IpAddress | None:
    try:
        addr = ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # rule 1, RFC 7208 §5
    return addr


def spf_domain(mail_from: str, helo: str) -> str:
    """The domain whose SPF record rule 1 reads first (MAIL FROM's, or the HELO name)."""
    return _identity(mail_from, helo)[1]


def _identity(mail_from: str, helo: str) -> tuple[Literal["mailfrom", "helo"], str, str]:
    """(identity, domain, sender) of rule 1."""
    mail_from = mail_from.strip().removeprefix("<").removesuffix(">")
    if mail_from:
        local, at, domain = mail_from.rpartition("@")
        if not at:
            domain, local = mail_from, ""
        return "mailfrom", domain, f"{local or 'postmaster'}@{domain}"
    return "helo", helo, f"postmaster@{helo}"


async def check_spf(dns: MailAuthDns, ip: str, mail_from: str, helo: str, *,
                    receiver: str = "unknown", now: float = 0.0,
                    default_explanation: str = DEFAULT_EXPLANATION) -> SpfResult:
    """Rule 1: the SPF result of a client for its MAIL FROM (or HELO) identity.

    ``receiver`` is ``%{r}`` (our host name) and ``now`` is ``%{t}`` (the injected clock), both
    used only in explanation texts.
    """
    identity, domain, sender = _identity(mail_from, helo)
    addr = _client_ip(ip)
    if addr is None:
        return SpfResult("permerror", identity, domain, sender, f"{ip!r} is not an IP address", ip, helo)
    client_ip = str(addr)
    evaluation = _Evaluation(dns, addr, sender, helo, receiver, now)
    try:
        outcome = await evaluation.check_host(domain)
    except _Abort as exc:
        return SpfResult(exc.result, identity, domain, sender, exc.reason, client_ip, helo)
    text = outcome.reason
    if outcome.result == "fail":
        text = outcome.explanation if outcome.explanation is not None else _default(
            evaluation, default_explanation, domain)
    return SpfResult(outcome.result, identity, domain, sender, text, client_ip, helo, outcome.mechanism)


def _default(evaluation: _Evaluation, template: str, domain: str) -> str:
    try:
        return expand(template, evaluation.context(domain), exp=True)
    except SpfSyntaxError:
        return template
