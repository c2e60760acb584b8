"""All the checks of one message at once: SPF, DKIM and ARC concurrently, then DMARC.

Rules:
1. ``check_message`` runs ``check_spf`` concurrently with ``verify_dkim`` (the header From
   domain's signatures first) and ``verify_arc``, then ``check_dmarc`` over their results; the caller
   decides what to do with ``MessageAuth`` (refuse, Junk, headers). ``sample`` is DMARC's pct
   draw in [0, 1) (the caller's randomness, injected for tests); ``now`` is the caller's clock,
   SPF's ``%{t}`` and the ``x=``/``t=`` reference of DKIM and ARC (0: unknown, they then read
   the system clock).
2. A message without a usable header From (RFC 7489 §6.6.1: not exactly one From with one
   address) gets ``dmarc=permerror`` with ``from_domain`` empty: it cannot pass DMARC.
3. Work is bounded by the parts: at most ``spf.MAX_DNS_TERMS`` DNS-querying SPF terms,
   ``dkim.MAX_SIGNATURES`` signatures, ``arc.MAX_ARC_SETS`` ARC sets, two DMARC lookups.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pigeon.mailauth.arc import ArcResult, verify_arc
from pigeon.mailauth.dkim import DkimResult, verify_dkim
from pigeon.mailauth.dmarc import DmarcResult, check_dmarc, header_from_domain
from pigeon.mailauth.lookup import MailAuthDns
from pigeon.mailauth.orgdomain import OrgDomains, bundled
from pigeon.mailauth.spf import SpfResult, check_spf


@dataclass(frozen=True)
class MessageAuth:
    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    arc: ArcResult
    dmarc: DmarcResult
    from_domain: str | None  # None: no usable header From (rule 2)


async def check_message(dns: MailAuthDns, ip: str, mail_from: str, helo: str, message: bytes, *,
                        sample: float, receiver: str = "unknown", now: float = 0.0,
                        orgdomains: OrgDomains | None = None) -> MessageAuth:
    """Rule 1."""
    from_domain = header_from_domain(message)
    # SPF's lookups run in a task of their own while DKIM's and ARC's run here: concurrent DNS
    # with a cold cache, and only one task to schedule with a warm one (three cost ~80 µs).
    spf_task = asyncio.ensure_future(check_spf(dns, ip, mail_from, helo, receiver=receiver, now=now))
    try:
        dkim = await verify_dkim(dns, message, prefer_domain=from_domain, now=now or None)
        arc = await verify_arc(dns, message, now=now or None)
    except BaseException:
        spf_task.cancel()
        raise
    spf = await spf_task
    if from_domain is None:
        dmarc = DmarcResult("permerror", "", "", None, "none", False, False, None,
                            "not exactly one From address (RFC 7489 §6.6.1)")
    else:
        dmarc = await check_dmarc(dns, from_domain, spf, dkim, sample=sample, orgdomains=orgdomains or bundled())
    return MessageAuth(spf, dkim, arc, dmarc, from_domain)
