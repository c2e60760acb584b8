"""The headers that write the checks down: Authentication-Results (RFC 8601) and Received-SPF
(RFC 7208 §9.1). Pure functions over the results; the intake prepends what they return.

Rules:
1. Method clauses use the names and results of the IANA registries (RFC 8601 §6, RFC 7208 §9.2,
   RFC 7489 §11.2, RFC 8617 §10.1): ``spf=<result> smtp.mailfrom=<domain>`` (``smtp.helo=`` for
   the HELO identity), one ``dkim=<result> header.d= header.s= header.a=`` per evaluated
   signature (``dkim=none`` when there was none), ``dmarc=<result> (p=<policy>[ dis=<disposition>])
   header.from=<domain>``, ``arc=<result>``.
2. Everything that came from the client (domains, HELO names, reasons) is rendered safely: a
   value that is not a plain token/dot-atom is a quoted-string with ``"`` and ``\\`` escaped;
   comments lose parentheses and backslashes; control characters (CR, LF included) are
   dropped; each piece is cut at ``MAX_VALUE`` characters. No input can add a header line.
3. ``authentication_results(authserv_id, clauses)`` gives the whole field, folded between
   clauses (``\\r\\n\\t``), ending in CRLF. ``is_ours(value, authserv_id)`` tells whether an
   existing Authentication-Results field claims our authserv-id (RFC 8601 §5: the intake removes
   those, they are forgeries), ignoring case, comments and an optional version.
4. ``received_spf(spf, receiver)`` gives the Received-SPF field: the result, a comment saying
   what it means, then ``client-ip envelope-from helo receiver identity`` and, when known,
   ``mechanism`` or ``problem`` (RFC 7208 §9.1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pigeon.mailauth.arc import ArcResult
from pigeon.mailauth.dkim import DkimResult
from pigeon.mailauth.dmarc import DmarcResult
from pigeon.mailauth.spf import SpfResult

# Rule 2: a value or comment longer than this is cut (a domain is at most 253 characters; a
# reason needs no more to be useful, and header lines should stay readable, RFC 5322 §2.1.1).
MAX_VALUE = 255
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+(?:@[A-Za-z0-9.\-]+)?\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # rule 2: C0, DEL and C1 are dropped
_AUTHSERV = re.compile(r"\s*(?:\([^)]*\)\s*)*([^\s;()]+)")


def _clean(text: str) -> str:
    # This runs for every value of the two fields of every message (issue 16's CPU budget):
    # C0, DEL and C1 are all non-printable, so a printable text (the usual case) has nothing
    # to drop; otherwise one regular-expression pass, not a Python loop per character.
    if text.isprintable():
        return text if len(text) <= MAX_VALUE else text[:MAX_VALUE]
    return _CONTROL.sub("", text)[:MAX_VALUE]


def _value(text: str) -> str:
    text = _clean(text)
    if text and _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    text = _clean(text).replace("(", "").replace(")", "").replace("\\", "").strip()
    return f" ({text})" if text else ""


def spf_clause(spf: SpfResult) -> str:
    prop = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"
    return f"spf={spf.result} {prop}={_value(spf.domain)}"


def dkim_clauses(results: Sequence[DkimResult]) -> list[str]:
    if not results:
        return ["dkim=none"]
    out = []
    for r in results:
        why = "" if r.result == "pass" else _comment(r.reason)
        props = " ".join(f"{k}={_value(v)}" for k, v in (("header.d", r.domain), ("header.s", r.selector),
                                                          ("header.a", r.algorithm)) if v)
        out.append(f"dkim={r.result}{why}" + (f" {props}" if props else ""))
    return out


def dmarc_clause(dmarc: DmarcResult) -> str:
    comment = ""
    if dmarc.policy is not None:
        dis = f" dis={dmarc.disposition}" if dmarc.result == "fail" and dmarc.disposition != dmarc.policy else ""
        comment = f" (p={dmarc.policy}{dis})"
    return f"dmarc={dmarc.result}{comment} header.from={_value(dmarc.from_domain)}"


def arc_clause(arc: ArcResult) -> str:
    if arc.result == "pass" and arc.sealers:
        return f"arc=pass{_comment('sealers: ' + ', '.join(arc.sealers))}"
    return f"arc={arc.result}"


def clauses(spf: SpfResult | None, dkim: Sequence[DkimResult] | None, dmarc: DmarcResult | None,
            arc: ArcResult | None) -> list[str]:
    """The method clauses of the checks that ran, in the order SPF, DKIM, DMARC, ARC."""
    out: list[str] = []
    if spf is not None:
        out.append(spf_clause(spf))
    if dkim is not None:
        out.extend(dkim_clauses(dkim))
    if dmarc is not None:
        out.append(dmarc_clause(dmarc))
    if arc is not None:
        out.append(arc_clause(arc))
    return out


def authentication_results(authserv_id: str, method_clauses: Sequence[str]) -> bytes:
    """Rule 3: the whole field with CRLF; ``none`` when no method ran (RFC 8601 §2.2)."""
    body = ";\r\n\t".join([_clean(authserv_id)] + [_clean(c) for c in method_clauses] if method_clauses
                          else [_clean(authserv_id) + "; none"])
    return f"Authentication-Results: {body}\r\n".encode("utf-8", "surrogateescape")


def is_ours(field_value: str, authserv_id: str) -> bool:
    """Rule 3: whether an Authentication-Results value claims ``authserv_id``."""
    m = _AUTHSERV.match(field_value)
    if m is None:
        return False
    return m.group(1).lower().rstrip(".") == authserv_id.lower().rstrip(".")


_SPF_MEANING = {
    "pass": "domain of {s} designates {ip} as permitted sender",
    "fail": "domain of {s} does not designate {ip} as permitted sender",
    "softfail": "domain of transitioning {s} does not designate {ip} as permitted sender",
    "neutral": "{ip} is neither permitted nor denied by domain of {s}",
    "none": "domain of {s} does not designate permitted sender hosts",
    "temperror": "error in processing during lookup of {s}",
    "permerror": "error in processing the SPF record of {s}",
}


def received_spf(spf: SpfResult, receiver: str) -> bytes:
    """Rule 4: the Received-SPF field with CRLF."""
    meaning = _SPF_MEANING[spf.result].format(s=_clean(spf.sender), ip=_clean(spf.client_ip))
    pairs = [("client-ip", spf.client_ip), ("envelope-from", spf.sender if spf.identity == "mailfrom" else ""),
             ("helo", spf.helo), ("receiver", receiver), ("identity", spf.identity)]
    if spf.mechanism:
        pairs.append(("mechanism", spf.mechanism))
    if spf.result in ("permerror", "temperror") and spf.explanation:
        pairs.append(("problem", spf.explanation))
    keys = ";\r\n\t".join(f"{k}={_value(v)}" for k, v in pairs if v)
    return f"Received-SPF: {spf.result}{_comment(f'{receiver}: {meaning}')}\r\n\t{keys};\r\n".encode(
        "utf-8", "surrogateescape")
