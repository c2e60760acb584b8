"""``AuthChecks`` over ``pigeon.mailauth``: its functions with our resolver, host name, clock
and random draw bound, and the two header fields that write their results down.

Rules:
1. ``check_dmarc``'s ``sample`` (the ``pct`` draw, RFC 7489 §6.6.4) comes from the injected
   ``random`` function; the receiver name in SPF explanations is our host name.
2. ``Authentication-Results`` (RFC 8601 §2.2): ``authserv-id; method=result property...`` for
   spf, dkim (one clause per signature, ``dkim=none`` without one), dmarc and arc, each clause
   on its own folded line. Method and result names are RFC 8601's registries (§6); values that
   are not RFC 5322 tokens are quoted (RFC 2045 ``value``).
3. ``Received-SPF`` (RFC 7208 §9.1): the result, a comment, then ``client-ip``,
   ``envelope-from``, ``helo``, ``receiver``, ``identity`` as ``key=value`` pairs.
4. No CR or LF from a checked message reaches a field: every text is cleaned first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pigeon.inbound.seams import ArcOutcome, DkimOutcome, DmarcOutcome, SpfOutcome
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
from pigeon.mailauth.dmarc import DmarcResult

_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~@]+$")
MAX_COMMENT = 200  # a comment's text, cut: a header line should stay readable (RFC 5322 §2.1.1)


def _clean(text: str) -> str:
    return "".join(c if " " <= c <= "~" or c > "\x9f" else " " for c in text)[:MAX_COMMENT]


def _value(text: str) -> str:
    """Rule 2: a token as it is, anything else quoted."""
    text = _clean(text)
    if text and _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    text = _clean(text).replace("(", "[").replace(")", "]").replace("\\", "/")
    return f" ({text})" if text.strip() else ""


def spf_clause(spf: SpfOutcome) -> str:
    prop = "smtp.helo" if spf.identity == "helo" else "smtp.mailfrom"
    ident = spf.domain if spf.identity == "helo" else (spf.sender or spf.domain)
    return f"spf={spf.result}{_comment(spf.explanation) if spf.result != 'pass' else ''} {prop}={_value(ident)}"


def dkim_clauses(dkim: Sequence[DkimOutcome]) -> list[str]:
    if not dkim:
        return ["dkim=none"]
    out = []
    for d in dkim:
        props = f" header.d={_value(d.domain)}" if d.domain else ""
        if d.selector:
            props += f" header.s={_value(d.selector)}"
        if d.algorithm:
            props += f" header.a={_value(d.algorithm)}"
        b = getattr(d, "signature_b", "")
        if isinstance(b, str) and b:
            props += f" header.b={_value(b)}"  # RFC 6008: tells signatures apart
        out.append(f"dkim={d.result}{_comment(d.reason) if d.result != 'pass' else ''}{props}")
    return out


def dmarc_clause(dmarc: DmarcOutcome) -> str:
    policy = f"p={dmarc.policy}" if dmarc.policy else "no policy"
    if dmarc.result == "fail" and dmarc.policy and dmarc.disposition != dmarc.policy:  # pct sampled out
        policy += f" dis={dmarc.disposition}"
    return f"dmarc={dmarc.result} ({policy}) header.from={_value(dmarc.from_domain)}"


def arc_clause(arc: ArcOutcome) -> str:
    note = f"sealed by {' '.join(arc.sealers)}" if arc.sealers else arc.reason
    return f"arc={arc.result}{_comment(note)}"


def authentication_results(authserv_id: str, spf: SpfOutcome | None, dkim: Sequence[DkimOutcome],
                           dmarc: DmarcOutcome | None, arc: ArcOutcome | None) -> bytes:
    """Rule 2."""
    clauses: list[str] = []
    if spf is not None:
        clauses.append(spf_clause(spf))
    clauses.extend(dkim_clauses(dkim))
    if dmarc is not None:
        clauses.append(dmarc_clause(dmarc))
    if arc is not None:
        clauses.append(arc_clause(arc))
    return ("Authentication-Results: " + authserv_id + ";\r\n\t" + ";\r\n\t".join(clauses) + "\r\n").encode()


def received_spf(spf: SpfOutcome, receiver: str, client_ip: str, helo: str) -> bytes:
    """Rule 3."""
    comment = spf.explanation or f"{receiver}: {spf.identity} {spf.sender or spf.domain} is {spf.result}"
    pairs = [f"client-ip={client_ip}"]
    if spf.identity == "mailfrom":
        pairs.append(f"envelope-from={_value(spf.sender)}")
    pairs += [f"helo={_value(helo or 'unknown')}", f"receiver={_value(receiver)}", f"identity={spf.identity}"]
    return f"Received-SPF: {spf.result}{_comment(comment)}\r\n\t{'; '.join(pairs)};\r\n".encode()


@dataclass
class MailAuthChecks:
    """``inbound.seams.AuthChecks`` over ``pigeon.mailauth`` (rule 1)."""

    dns: MailAuthDns
    receiver: str
    now: Callable[[], float]
    random: Callable[[], float]

    async def check_spf(self, ip: str, mail_from: str, helo: str) -> SpfResult:
        return await check_spf(self.dns, ip, mail_from, helo, receiver=self.receiver, now=self.now())

    async def verify_dkim(self, message: bytes) -> tuple[DkimResult, ...]:
        return await verify_dkim(self.dns, message)

    async def verify_arc(self, message: bytes) -> ArcResult:
        return await verify_arc(self.dns, message)

    async def check_dmarc(self, header_from_domain: str, spf: SpfOutcome,
                          dkim: Sequence[DkimOutcome]) -> DmarcResult:
        if not isinstance(spf, SpfResult) or not all(isinstance(d, DkimResult) for d in dkim):
            raise TypeError("check_dmarc takes the results of check_spf and verify_dkim")
        return await check_dmarc(self.dns, header_from_domain, spf,
                                 [d for d in dkim if isinstance(d, DkimResult)], sample=self.random())

    def header_from_domain(self, headers: bytes) -> str | None:
        return header_from_domain(headers)

    def authentication_results(self, authserv_id: str, spf: SpfOutcome | None, dkim: Sequence[DkimOutcome],
                               dmarc: DmarcOutcome | None, arc: ArcOutcome | None) -> bytes:
        return authentication_results(authserv_id, spf, dkim, dmarc, arc)

    def received_spf(self, spf: SpfOutcome, receiver: str, client_ip: str, helo: str) -> bytes:
        return received_spf(spf, receiver, client_ip, helo)
