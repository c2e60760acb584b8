"""DMARC (RFC 7489): the header From domain's policy, alignment, and what to do.

Rules:
1. ``header_from_domain(headers)`` is the domain of the message's author (RFC 7489 §6.6.1):
   exactly one ``From:`` field holding exactly one address with a domain; otherwise ``None``
   (the caller decides: a message without a usable From cannot pass DMARC).
2. Policy discovery (§6.6.3): TXT at ``_dmarc.<From domain>``; when that gives no DMARC
   record (NXDOMAIN, no records, none starting with ``v=DMARC1``), TXT at ``_dmarc.<org
   domain>``. Several DMARC records at one name: no policy (``none``). A temporary DNS error
   at either step: ``temperror``. A record whose ``p=`` (or ``sp=``) is missing or invalid
   counts as ``p=none`` when it has a valid ``rua``, else it is ``permerror`` (§6.6.3 step 6).
   Unknown tags are ignored; invalid optional values fall back to their defaults (§6.3).
3. The policy is ``p``, or ``sp`` (when present) if the record came from the organisational
   domain for a From domain below it (§6.3 ``sp``).
4. Alignment (§3.1): SPF is aligned when it passed for a domain (MAIL FROM's, or HELO's for a
   null sender) that matches the From domain under ``aspf``; DKIM when any passing signature's
   ``d=`` matches under ``adkim`` (relaxed: the same organisational domain; strict: the same
   name). Alignment is computed even without a record (relaxed), so that the caller can refuse
   mail that claims one of *our* domains without passing (issue 16).
5. ``result`` is ``pass`` when either is aligned, else ``fail`` when a policy exists. The
   ``disposition`` of a fail is the policy, unless ``pct`` sampling spares it (§6.6.4:
   ``sample`` in [0,1) is drawn by the caller; when ``sample * 100 >= pct`` the next milder
   policy applies: reject → quarantine, quarantine → none). Any other result: ``none``.

What can go wrong: DNS errors become ``temperror``; malformed records ``permerror`` or no policy;
no exception leaves ``check_dmarc``.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pigeon.mailauth.dkim import DkimResult
from pigeon.mailauth.lookup import DnsError, DnsTempError, MailAuthDns, NoSuchDomain
from pigeon.mailauth.orgdomain import OrgDomains, bundled
from pigeon.mailauth.spf import SpfResult

log = logging.getLogger(__name__)

Policy = Literal["none", "quarantine", "reject"]
DmarcResultKind = Literal["pass", "fail", "none", "temperror", "permerror"]
_POLICIES: dict[str, Policy] = {"none": "none", "quarantine": "quarantine", "reject": "reject"}
_MILDER: dict[Policy, Policy] = {"reject": "quarantine", "quarantine": "none", "none": "none"}
# RFC 7489 §6.3: ri defaults to 86400 seconds (one aggregate report a day).
DEFAULT_REPORT_INTERVAL = 86400
# Header block scanned for From fields: RFC 5322 sets no limit; the SMTP intake bounds the
# message. From fields read at most (a hostile message may repeat the field thousands of times;
# two are already "not exactly one").
MAX_FROM_FIELDS = 2


@dataclass(frozen=True)
class DmarcRecord:
    p: Policy
    sp: Policy | None = None
    pct: int = 100
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"
    rua: tuple[str, ...] = ()  # mailto: URIs, without the "!size" suffix
    ruf: tuple[str, ...] = ()
    fo: str = "0"
    ri: int = DEFAULT_REPORT_INTERVAL
    domain: str = ""  # where the record was found (the From domain or its org domain)


@dataclass(frozen=True)
class DmarcResult:
    result: DmarcResultKind
    from_domain: str
    org_domain: str
    policy: Policy | None  # p (or sp for a subdomain) when a record exists
    disposition: Policy  # after pct sampling
    spf_aligned: bool
    dkim_aligned: bool
    record: DmarcRecord | None
    reason: str = ""


class DmarcSyntaxError(Exception):
    """A v=DMARC1 record without a usable policy (rule 2)."""


def _uris(value: str) -> tuple[str, ...]:
    out = []
    for uri in value.split(","):
        uri = uri.strip()
        uri = re.sub(r"!\d+[kmgt]?\Z", "", uri, flags=re.IGNORECASE)  # §6.2 size limit
        if uri.lower().startswith("mailto:") and "@" in uri:
            out.append(uri)
    return tuple(out)


def parse_dmarc_record(text: str, domain: str = "") -> DmarcRecord:
    """Rule 2: a record's tags; raises ``DmarcSyntaxError`` when it gives no policy."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if eq and key and key not in tags:
            tags[key] = value.strip()
    rua = _uris(tags.get("rua", ""))
    p = _POLICIES.get(tags.get("p", "").lower())
    sp_text = tags.get("sp")
    sp = _POLICIES.get(sp_text.lower()) if sp_text is not None else None
    if p is None or (sp_text is not None and sp is None):
        if not rua:
            raise DmarcSyntaxError(f"no valid p= in {text[:80]!r} (RFC 7489 §6.6.3)")
        p, sp = "none", None  # §6.6.3 step 6: act as p=none when rua is usable
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and len(pct_text) <= 3 and int(pct_text) <= 100 else 100
    adkim: Literal["r", "s"] = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf: Literal["r", "s"] = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    ri_text = tags.get("ri", "")
    ri = int(ri_text) if ri_text.isdigit() and len(ri_text) <= 9 else DEFAULT_REPORT_INTERVAL
    return DmarcRecord(p, sp, pct, adkim, aspf, rua, _uris(tags.get("ruf", "")), tags.get("fo", "0") or "0",
                       ri, domain)


# The records of a busy sender domain are the same for every message: parsed once (DmarcRecord
# is immutable), for as many domains as a cache of DNS answers would hold at a time. A record
# that does not parse raises each time (not cached), which bounds nothing new: it is one parse.
MAX_PARSED_RECORDS = 1024
_parse_memo = functools.lru_cache(maxsize=MAX_PARSED_RECORDS)(parse_dmarc_record)
_DMARC1 = re.compile(r"v\s*=\s*DMARC1\s*(;|\Z)")


def _select(txts: Sequence[bytes]) -> list[str]:
    found = []
    for t in txts:
        text = t.decode("utf-8", "replace")
        if _DMARC1.match(text):  # §6.6.3 step 3: v=DMARC1 first
            found.append(text)
    return found


async def _records_at(dns: MailAuthDns, domain: str) -> list[str]:
    """The DMARC records at ``_dmarc.<domain>``; DnsTempError propagates."""
    try:
        return _select(await dns.txt(f"_dmarc.{domain}"))
    except NoSuchDomain:
        return []
    except DnsTempError:
        raise
    except DnsError as exc:
        log.info("dmarc: _dmarc.%s: %s (no record)", domain, exc)
        return []


async def check_dmarc(dns: MailAuthDns, header_from_domain: str, spf: SpfResult, dkim: Sequence[DkimResult], *,
                      sample: float, orgdomains: OrgDomains | None = None) -> DmarcResult:
    """Rules 2-5: the DMARC verdict for a message whose header From is ``header_from_domain``."""
    orgs = orgdomains or bundled()
    from_domain = header_from_domain.strip().lower().rstrip(".")
    org = orgs.org_domain(from_domain)

    def without_record(result: DmarcResultKind, reason: str) -> DmarcResult:
        # relaxed alignment, for the log and the header, when no record says otherwise
        spf_ok_r = spf.result == "pass" and orgs.aligned(spf.domain, from_domain, "r")
        dkim_ok_r = any(d.result == "pass" and orgs.aligned(d.domain, from_domain, "r") for d in dkim)
        return DmarcResult(result, from_domain, org, None, "none", spf_ok_r, dkim_ok_r, None, reason)

    if not from_domain or "." not in from_domain:
        return DmarcResult("permerror", from_domain, org, None, "none", False, False, None,
                           "no usable header From domain")
    try:
        texts = await _records_at(dns, from_domain)
        found_at = from_domain
        if not texts and org != from_domain:
            texts = await _records_at(dns, org)
            found_at = org
    except DnsTempError as exc:
        return without_record("temperror", f"_dmarc lookup: {exc}")
    if len(texts) != 1:
        return without_record("none", "no DMARC record" if not texts else "several DMARC records (RFC 7489 §6.6.3)")
    try:
        record = _parse_memo(texts[0], found_at)
    except DmarcSyntaxError as exc:
        return without_record("permerror", str(exc))
    policy: Policy = record.sp if (found_at != from_domain and record.sp is not None) else record.p
    spf_aligned = spf.result == "pass" and orgs.aligned(spf.domain, from_domain, record.aspf)
    dkim_aligned = any(d.result == "pass" and orgs.aligned(d.domain, from_domain, record.adkim) for d in dkim)
    if spf_aligned or dkim_aligned:
        return DmarcResult("pass", from_domain, org, policy, "none", spf_aligned, dkim_aligned, record,
                           "aligned " + " and ".join(n for n, ok in (("spf", spf_aligned), ("dkim", dkim_aligned)) if ok))
    disposition = policy if sample * 100 < record.pct else _MILDER[policy]
    return DmarcResult("fail", from_domain, org, policy, disposition, False, False, record,
                       "neither SPF nor DKIM aligned with the From domain"
                       + ("" if disposition == policy else f" (pct={record.pct}: sampled out)"))


# A From field (a line that starts with "From", optional white space, folded or not, a colon)
# and its continuation lines.
_FROM_FIELD = re.compile(r"^from(?:[ \t]|\r?\n[ \t])*:((?:[^\n]*)(?:\n[ \t][^\n]*)*)", re.IGNORECASE | re.MULTILINE)
_FOLD = re.compile(r"\r?\n")
# "addr@dom", "<addr@dom>" or "Display Name <addr@dom>" with a dot-atom local part, a plain
# domain and a display name of atoms only: what email.utils.getaddresses reads as one address
# with exactly these characters. Anything else (quotes, comments, groups, lists) goes to it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)"
    rf"|(?:{_ATEXT}(?:[ \t]+{_ATEXT})*[ \t]*)?<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>)[ \t]*")


def _single_from_value(head: bytes) -> str | None:
    """The value of the header's only ``From:`` field (what ``_FROM_FIELD`` would capture), found
    with bytes searches, when exactly one line starts with "from" and a colon follows at once
    (the usual header); None otherwise, and the regular expression decides."""
    lower = head.lower()
    starts = lower.count(b"\nfrom") + lower.startswith(b"from")
    if starts != 1:
        return None
    pos = 4 if lower.startswith(b"from") else lower.find(b"\nfrom") + 5
    if lower[pos:pos + 1] != b":":
        return None
    end = pos + 1
    while True:
        nl = head.find(b"\n", end)
        if nl < 0:
            end = len(head)
            break
        if head[nl + 1:nl + 2] not in (b" ", b"\t"):
            end = nl
            break
        end = nl + 1  # a continuation line (RFC 5322 §2.2.3)
    return head[pos + 1:end].decode("utf-8", "surrogateescape")


def header_from_domain(message_headers: bytes) -> str | None:
    """Rule 1: the domain of the single author address, or ``None``."""
    cut = message_headers.find(b"\r\n\r\n")
    cut = len(message_headers) if cut < 0 else cut
    lf = message_headers.find(b"\n\n", 0, cut)  # only within the headers: never scans the body
    cut = lf if lf >= 0 else cut
    head = message_headers[:cut]
    single = _single_from_value(head)
    if single is not None:
        froms = [single]
    else:
        text = head.decode("utf-8", "surrogateescape")
        # The From fields with their continuation lines (RFC 5322 §2.2.3), unfolded; one
        # regular-expression scan instead of a Python loop over every header line.
        froms = [m.group(1) for _, m in zip(range(MAX_FROM_FIELDS), _FROM_FIELD.finditer(text))]
    if len(froms) != 1:
        return None  # RFC 7489 §6.6.1: none, or more than one From field
    value = _FOLD.sub("", froms[0])
    value = value[:-1] if value.endswith("\r") else value
    simple = _SIMPLE_MAILBOX.fullmatch(value)
    if simple is not None:  # the common case, where getaddresses would say the same
        addresses = [simple.group(1) or simple.group(2)]
    else:
        addresses = [addr for _, addr in email.utils.getaddresses([value.strip()]) if addr]
    if len(addresses) != 1:
        return None
    local, at, domain = addresses[0].rpartition("@")
    domain = domain.strip().lower().rstrip(".")
    if not at or not local or not domain or "." not in domain or domain.startswith("["):
        return None
    return domain
