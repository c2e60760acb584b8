"""What transport security a destination demands: DANE, then MTA-STS, then nothing.

Rules:
1. ``for_domain(domain)`` (never raises): with ``[dns] dnssec = true``, the MX RRset is asked
   again with the DO bit; its AD bit says whether DANE may apply (RFC 7672 §2.2.1: only an
   authenticated MX lookup — or an authenticated implicit MX — leads to TLSA lookups). The
   MTA-STS policy comes from ``sts.StsCache``.
2. ``for_host(domain_policy, host)`` decides per MX host, DANE first (RFC 7672 §2, and
   RFC 8461 §2: "senders who implement DANE SHOULD prefer it"):
   - authenticated MX, and a secure ``_25._tcp.<host>`` TLSA RRset with usable records →
     ``dane``: STARTTLS required and the chain must match (``tlsa.match_chain``);
   - a secure TLSA RRset with none usable → ``dane-encrypt``: STARTTLS required, any certificate
     (RFC 7672 §2.2);
   - a TLSA lookup that fails (SERVFAIL, timeout) for an authenticated MX → ``dane-error``: the
     host is not used this time (RFC 7672 §2.2.1: "the SMTP client MUST NOT ... connect");
   - no TLSA (NXDOMAIN, no records, or not authenticated) → the MTA-STS policy if any:
     ``sts-enforce`` / ``sts-testing`` with ``permitted`` telling whether the host matches an
     ``mx:`` pattern (RFC 8461 §4.1); ``mode: none`` is no policy;
   - else ``none``: the relay's own rules (opportunistic TLS, ``[delivery.tls_policy]``).
3. ``authenticated`` rules (``dane``, ``sts-enforce``, ``sts-testing``) are the ones a
   REQUIRETLS message may use (RFC 8689 §4.1: MX from DNSSEC or MTA-STS, and the host
   authenticated by DANE or by a certificate valid for its name; a ``testing`` policy is
   treated as ``enforce`` for such a message).
4. ``report(...)`` counts one session for TLS-RPT under the policy domain (``reports``).

What can go wrong: DNS trouble is a decision of rule 2, never an exception.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pigeon.core.clock import Clock
from pigeon.delivery.tlspolicy.mtasts import Policy
from pigeon.delivery.tlspolicy.reports import ReportBook
from pigeon.delivery.tlspolicy.sts import StsCache, StsLookup, TxtResolver
from pigeon.delivery.tlspolicy.tlsa import TlsaRecord, match_chain, usable
from pigeon.delivery.tlspolicy.tlsrpt import PolicyType, ResultType
from pigeon.dns.resolver import DnsError, DnsTempError, NoSuchDomain, SecureAnswer

log = logging.getLogger(__name__)

Kind = Literal["dane", "dane-encrypt", "dane-error", "sts-enforce", "sts-testing", "none"]
TLSA_PORT = 25  # RFC 7672 §2.2.3: the TLSA base domain is _25._tcp.<MX host>


class PolicyResolver(TxtResolver, Protocol):
    async def secure(self, name: str, rdtype: str) -> SecureAnswer: ...


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    domain: str
    mx_authenticated: bool = False
    sts: StsLookup = StsLookup(None)

    @property
    def sts_active(self) -> bool:
        return self.sts.policy is not None and self.sts.policy.mode != "none"


@dataclass(frozen=True, slots=True)
class HostRule:
    kind: Kind
    tlsa: tuple[TlsaRecord, ...] = ()
    permitted: bool = True
    reason: str = ""

    @property
    def authenticated(self) -> bool:
        """Rule 3."""
        return self.kind in ("dane", "sts-enforce", "sts-testing") and self.permitted


def parse_tlsa(text: str) -> TlsaRecord | None:
    parts = text.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    try:
        return TlsaRecord(int(parts[0]), int(parts[1]), int(parts[2]), bytes.fromhex(parts[3]))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DaneCheck:
    """The peer check of a ``dane`` host: hashable, so that equal settings share cached connections."""

    records: tuple[TlsaRecord, ...]
    names: tuple[str, ...]
    clock: Clock = field(compare=False, hash=False)

    def __call__(self, chain: list[bytes]) -> str | None:
        now = datetime.datetime.fromtimestamp(self.clock.now(), datetime.timezone.utc)
        return match_chain(chain, list(self.records), self.names, now)


class TransportPolicy:
    def __init__(self, resolver: PolicyResolver, sts: StsCache | None, book: ReportBook, clock: Clock,
                 dnssec: bool) -> None:
        self.resolver = resolver
        self.sts = sts
        self.book = book
        self.clock = clock
        self.dnssec = dnssec

    async def for_domain(self, domain: str) -> DomainPolicy:
        """Rule 1."""
        authenticated = False
        if self.dnssec:
            try:
                answer = await self.resolver.secure(domain, "MX")
                authenticated = answer.authenticated
                if not answer.records and authenticated:
                    # Implicit MX: the domain's own address records must be secure (RFC 7672 §2.2.1).
                    authenticated = (await self.resolver.secure(domain, "A")).authenticated
            except DnsError as exc:
                log.info("dane: %s: secure MX lookup failed (%s); DANE not used", domain, exc)
        sts = await self.sts.policy(domain) if self.sts is not None else StsLookup(None)
        return DomainPolicy(domain, authenticated, sts)

    async def for_host(self, dp: DomainPolicy, host: str) -> HostRule:
        """Rule 2."""
        if dp.mx_authenticated:
            name = f"_{TLSA_PORT}._tcp.{host}"
            try:
                answer = await self.resolver.secure(name, "TLSA")
            except NoSuchDomain:
                answer = SecureAnswer((), False)
            except (DnsTempError, DnsError) as exc:
                log.warning("dane: %s: TLSA lookup failed (%s); host not used", host, exc)
                return HostRule("dane-error", reason=f"TLSA lookup for {name} failed: {exc}")
            if answer.authenticated and answer.records:
                parsed = [r for r in (parse_tlsa(t) for t in answer.records) if r is not None]
                good, skipped = usable(parsed)
                for why in skipped:
                    log.warning("dane: %s: unusable TLSA record skipped: %s", name, why)
                if good:
                    return HostRule("dane", tuple(good))
                log.warning("dane: %s: no usable TLSA record; TLS required without authentication", name)
                return HostRule("dane-encrypt", reason="no usable TLSA record")
        policy = dp.sts.policy
        if policy is not None and policy.mode != "none":
            kind: Kind = "sts-enforce" if policy.mode == "enforce" else "sts-testing"
            return HostRule(kind, permitted=policy.permits(host))
        return HostRule("none")

    def dane_check(self, rule: HostRule, host: str) -> DaneCheck:
        return DaneCheck(rule.tlsa, (host,), self.clock)

    def report(self, dp: DomainPolicy, rule: HostRule, ok: bool, result: ResultType | None = None,
               ip: str = "", mx: str = "") -> None:
        """Rule 4."""
        ptype: PolicyType
        if rule.kind in ("dane", "dane-encrypt", "dane-error"):
            ptype, strings, hosts = "tlsa", [str(r) for r in rule.tlsa], [mx] if mx else []
        elif rule.kind in ("sts-enforce", "sts-testing") and dp.sts.policy is not None:
            ptype, strings, hosts = "sts", _policy_lines(dp.sts.policy), list(dp.sts.policy.mx)
        else:
            return
        self.book.record(dp.domain, ptype, strings, hosts, ok, result, ip, mx)


def _policy_lines(policy: Policy) -> list[str]:
    return policy.to_text().rstrip("\r\n").split("\r\n")
