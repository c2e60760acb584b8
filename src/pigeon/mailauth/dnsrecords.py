"""The DNS records a local domain should publish (``pigeon dns DOMAIN``), and how a found record
compares with the wanted one (``--check``). Pure: the caller does the lookups.

Rules:
1. Owners are fully qualified with the trailing dot; lines are ``<owner> IN <TYPE> <data>``.
   TXT data is written as quoted strings of at most 255 octets each (RFC 1035 §3.3.14;
   RFC 6376 §3.6.2.2: a DKIM key longer than that is split into several strings, which the
   receiver concatenates), with ``"`` and ``\\`` escaped (RFC 1035 §5.1).
2. The records: MX (the hostname, preference 10); SPF (RFC 7208: ``v=spf1 mx ~all``, or the
   ``[dns] public_ips`` as ``ip4:``/``ip6:`` mechanisms); every published DKIM key
   (``<selector>._domainkey``); DMARC (RFC 7489 §6.3, ``p=quarantine`` with ``rua`` to the
   postmaster); MTA-STS (RFC 8461 §3.1 ``_mta-sts`` TXT with the policy id, and the
   ``mta-sts`` host); TLS-RPT (RFC 8460 §3, ``_smtp._tls``); the SRV records of RFC 6186 and
   RFC 8314 §5.1 (implicit TLS preferred: priority 0, STARTTLS 10; a service that does not
   listen gets the target ``.``, "not available", RFC 6186 §4 / RFC 2782); the ``autoconfig``
   and ``autodiscover`` names of mail clients.
3. Required (``--check`` fails when they are missing or differ): MX, SPF, the signing DKIM keys
   and DMARC. The rest is reported, never fatal: a domain may serve clients differently.
4. Comparison: TXT records are compared as the concatenation of their strings, with runs of
   blanks around ``;`` and runs of blanks ignored; among several TXT records at one owner the one with the same
   version tag (``v=spf1``, ``v=DKIM1``...) is the one compared. MX is ``ok`` when one of the
   records points at the hostname. Names compare without case or trailing dot.

What can go wrong: nothing raises here for DNS content; a wrong record is a ``differs`` line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

TXT_CHUNK = 255  # RFC 1035 §3.3: a <character-string> holds at most 255 octets
MTA_STS_MAX_AGE = 604800  # one week (RFC 8461 §3.2 example; at most 31557600)
# RFC 6186 §3 and RFC 8314 §5.1: service, default port, priority (implicit TLS first).
SRV_SERVICES: tuple[tuple[str, str, int], ...] = (
    ("_submissions._tcp", "submissions", 0),
    ("_submission._tcp", "submission", 10),
    ("_imaps._tcp", "imaps", 0),
    ("_imap._tcp", "imap", 10),
    ("_pop3s._tcp", "pop3s", 0),
)
Status = Literal["ok", "missing", "differs"]


@dataclass(frozen=True, slots=True)
class WantedRecord:
    owner: str  # fully qualified, trailing dot
    rtype: str
    value: str  # comparable form: TXT text joined; MX "10 host"; SRV "0 1 465 host"; names without the dot
    required: bool
    comment: str = ""

    def data(self) -> str:
        if self.rtype == "TXT":
            return txt_strings(self.value)
        if self.rtype in ("MX", "SRV", "CNAME"):
            parts = self.value.split()
            host = parts[-1]
            parts[-1] = host if host == "." else host + "."
            return " ".join(parts)
        return self.value

    def zone_line(self) -> str:
        return f"{self.owner} IN {self.rtype} {self.data()}"


def txt_strings(text: str) -> str:
    """Rule 1: ``text`` as quoted strings of at most 255 octets each (escapes do not count)."""
    raw = text.encode("utf-8")
    chunks = [raw[i:i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]
    out = []
    for chunk in chunks:
        s = chunk.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'"{s}"')
    return " ".join(out)


def mta_sts_policy(mode: str, mx: Sequence[str], max_age: int = MTA_STS_MAX_AGE) -> str:
    """The policy file served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``: the one
    text both the web endpoint serves (``web.mtasts``) and ``pigeon dns`` announces the id of.
    RFC 8461 §3.2: ``version: STSv1``, ``mode``, one ``mx`` line per pattern, ``max_age``, each
    line ended by CRLF (the ABNF's ``sts-policy-term-sep``)."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "".join(f"{line}\r\n" for line in lines)


def policy_id(policy: str) -> str:
    """RFC 8461 §3.1 ``id``: 1-32 alphanumerics that change when the policy text does."""
    return hashlib.sha256(policy.encode("utf-8")).hexdigest()[:20]


def policy_mode(policy: str) -> str:
    """The ``mode`` value of a policy text (for the record's comment)."""
    for line in policy.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip() == "mode":
            return value.strip()
    return "?"


def spf_value(public_ips: Sequence[str]) -> str:
    if not public_ips:
        return "v=spf1 mx ~all"
    mechs = []
    for ip in public_ips:
        addr = ipaddress.ip_address(ip)
        mechs.append(f"ip{addr.version}:{addr}")
    return "v=spf1 " + " ".join(mechs) + " ~all"


def wanted_records(domain: str, hostname: str, dkim: Sequence[tuple[str, str, bool]],
                   public_ips: Sequence[str] = (), services: Mapping[str, bool] | None = None,
                   mta_sts: str | None = None) -> list[WantedRecord]:
    """Rule 2. ``dkim``: (selector, TXT data, signing) per published key; ``services``: which of
    the SRV services listen (absent: all); ``mta_sts``: the policy text the web endpoint serves
    (absent: testing mode, the hostname as the MX, a week)."""
    d = domain.lower().rstrip(".")
    h = hostname.lower().rstrip(".")
    fq = d + "."
    postmaster = f"postmaster@{d}"
    out = [WantedRecord(fq, "MX", f"10 {h}", True, "mail for the domain goes to this server"),
           WantedRecord(fq, "TXT", spf_value(public_ips), True, "SPF (RFC 7208): who may send as the domain")]
    if public_ips and (h == d or h.endswith("." + d)):
        for ip in public_ips:
            rtype = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
            out.append(WantedRecord(h + ".", rtype, ip, False, "the mail server's address"))
    for selector, txt, signing in dkim:
        what = "signs now" if signing else "kept published until `pigeon dkim retire`"
        out.append(WantedRecord(f"{selector}._domainkey.{fq}", "TXT", txt, signing, f"DKIM key {selector} ({what})"))
    out.append(WantedRecord(
        f"_dmarc.{fq}", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:{postmaster}", True,
        "DMARC (RFC 7489): start with p=quarantine and reports to the postmaster; "
        "read the reports, then move to p=reject"))
    policy = mta_sts if mta_sts is not None else mta_sts_policy("testing", [h])
    out.append(WantedRecord(f"_mta-sts.{fq}", "TXT", f"v=STSv1; id={policy_id(policy)}", False,
                            f"MTA-STS (RFC 8461), mode {policy_mode(policy)}; the policy is served by the "
                            "mta-sts host"))
    out.append(WantedRecord(f"mta-sts.{fq}", "CNAME", h, False, "serves https://mta-sts.<domain>/.well-known/mta-sts.txt"))
    out.append(WantedRecord(f"_smtp._tls.{fq}", "TXT", f"v=TLSRPTv1; rua=mailto:{postmaster}", False,
                            "TLS-RPT (RFC 8460): senders' TLS reports"))
    default_ports = {"submissions": 465, "submission": 587, "imaps": 993, "imap": 143, "pop3s": 995}
    for owner, service, priority in SRV_SERVICES:
        on = services is None or services.get(service, False)
        value = f"{priority} 1 {default_ports[service]} {h}" if on else "0 0 0 ."
        out.append(WantedRecord(f"{owner}.{fq}", "SRV", value, False,
                                f"RFC 6186/8314: {service}" + ("" if on else " (not offered)")))
    out.append(WantedRecord(f"autoconfig.{fq}", "CNAME", h, False, "Thunderbird-style autoconfiguration"))
    out.append(WantedRecord(f"autodiscover.{fq}", "CNAME", h, False, "Outlook-style autodiscovery"))
    return out


def zone_text(records: Sequence[WantedRecord]) -> str:
    lines = []
    for r in records:
        if r.comment:
            lines.append(f"; {r.comment}")
        lines.append(r.zone_line())
    return "\n".join(lines) + "\n"


_BLANKS = re.compile(r"\s*;\s*")


def _norm_txt(text: str) -> str:
    return re.sub(r"\s+", " ", _BLANKS.sub(";", text.strip()).rstrip(";"))


def _version_tag(text: str) -> str:
    """``v=spf1``, ``v=DKIM1``...: the first token, before a ``;`` or a blank."""
    return re.split(r"[;\s]", text.strip(), maxsplit=1)[0].lower()


def _name(text: str) -> str:
    return text.lower().rstrip(".")


def compare(record: WantedRecord, found: Sequence[str]) -> tuple[Status, str]:
    """Rule 4: the status of ``record`` given the values found (in the comparable form of
    ``WantedRecord.value``), and what was found, for the report."""
    shown = ", ".join(found) if found else "nothing"
    if not found:
        return "missing", shown
    if record.rtype == "TXT":
        tag = _version_tag(record.value)
        same_kind = [f for f in found if _version_tag(f) == tag]
        if not same_kind:
            return "missing", shown
        if any(_norm_txt(f) == _norm_txt(record.value) for f in same_kind):
            return "ok", shown
        return "differs", ", ".join(same_kind)
    if record.rtype == "MX":
        want = _name(record.value.split()[-1])
        hosts = [_name(f.split()[-1]) for f in found]
        return ("ok" if want in hosts else "differs"), shown
    if record.rtype == "SRV":
        want_parts = record.value.split()
        for f in found:
            parts = f.split()
            if len(parts) == 4 and parts[:3] == want_parts[:3] and _name(parts[3]) == _name(want_parts[3]):
                return "ok", shown
        return "differs", shown
    if record.rtype == "CNAME":
        return ("ok" if any(_name(f) == _name(record.value) for f in found) else "differs"), shown
    return ("ok" if record.value in found else "differs"), shown
