"""``AuthChecks`` over ``pigeon.mailauth``: its functions with our resolver, host name, clock
and random draw bound, and its renderers of the two header fields (``mailauth.authres``).

Rules:
1. ``spf_cached`` asks the resolver's cache (``cache``; without one: never cached) for the
   SPF identity's TXT record. ``check_dmarc``'s ``sample`` (the ``pct`` draw, RFC 7489 §6.6.4) comes from the injected
   ``random`` function; the receiver name in SPF explanations is our host name.
2. The results given back to it are the ones it produced (``check_spf``, ``verify_dkim``...);
   anything else is a ``TypeError`` (a bug of the caller, never of the message).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pigeon.inbound.seams import ArcOutcome, DkimOutcome, DmarcOutcome, DnsCache, SpfOutcome
from pigeon.mailauth import (
    ArcResult,
    DkimResult,
    MailAuthDns,
    SpfResult,
    check_dmarc,
    check_spf,
    header_from_domain,
    verify_arc,
    verify_dkim,
)
from pigeon.mailauth import authres
from pigeon.mailauth.dmarc import DmarcResult
from pigeon.mailauth.spf import spf_domain


@dataclass
class MailAuthChecks:
    """``inbound.seams.AuthChecks`` over ``pigeon.mailauth`` (rule 1)."""

    dns: MailAuthDns
    receiver: str
    now: Callable[[], float]
    random: Callable[[], float]
    cache: DnsCache | None = None

    async def check_spf(self, ip: str, mail_from: str, helo: str) -> SpfResult:
        return await check_spf(self.dns, ip, mail_from, helo, receiver=self.receiver, now=self.now())

    def spf_cached(self, mail_from: str, helo: str) -> bool:
        return self.cache is not None and self.cache.cached(spf_domain(mail_from, helo), "TXT")

    async def verify_dkim(self, message: bytes, prefer_domain: str | None, crlf: bool = False) -> tuple[DkimResult, ...]:
        return await verify_dkim(self.dns, message, prefer_domain=prefer_domain, crlf=crlf)

    async def verify_arc(self, message: bytes) -> ArcResult:
        return await verify_arc(self.dns, message)

    async def check_dmarc(self, header_from_domain: str, spf: SpfOutcome,
                          dkim: Sequence[DkimOutcome]) -> DmarcResult:
        return await check_dmarc(self.dns, header_from_domain, _spf(spf), _dkim(dkim), sample=self.random())

    def header_from_domain(self, headers: bytes) -> str | None:
        return header_from_domain(headers)

    def authentication_results(self, authserv_id: str, spf: SpfOutcome | None, dkim: Sequence[DkimOutcome],
                               dmarc: DmarcOutcome | None, arc: ArcOutcome | None) -> bytes:
        if dmarc is not None and not isinstance(dmarc, DmarcResult):
            raise TypeError("not a result of check_dmarc")
        if arc is not None and not isinstance(arc, ArcResult):
            raise TypeError("not a result of verify_arc")
        clauses = authres.clauses(_spf(spf) if spf is not None else None, _dkim(dkim), dmarc, arc)
        return authres.authentication_results(authserv_id, clauses)

    def received_spf(self, spf: SpfOutcome, receiver: str, client_ip: str, helo: str) -> bytes:
        return authres.received_spf(_spf(spf), receiver)

    def is_ours(self, field_value: str, authserv_id: str) -> bool:
        return authres.is_ours(field_value, authserv_id)


def _spf(spf: SpfOutcome) -> SpfResult:
    if not isinstance(spf, SpfResult):
        raise TypeError("not a result of check_spf")
    return spf


def _dkim(dkim: Sequence[DkimOutcome]) -> list[DkimResult]:
    out = [d for d in dkim if isinstance(d, DkimResult)]
    if len(out) != len(dkim):
        raise TypeError("not results of verify_dkim")
    return out
