"""TLS reporting (RFC 8460) as pure values: the ``_smtp._tls`` record, the counts, the report.

Rules:
1. ``parse_rua(records)``: exactly one TXT record starting with ``v=TLSRPTv1`` (RFC 8460 §3);
   its ``rua`` is a comma-separated list of URIs, of which the ``mailto:`` ones are returned
   (https reporting is not implemented). Several records, or none with a usable ``rua`` →
   ``[]`` (no report is sent).
2. ``Tally`` counts one policy domain's sessions for one UTC day: successes, failures, and the
   failures by (result type, sending IP, receiving MX) — RFC 8460 §4.3 result types. At most
   ``MAX_FAILURE_KINDS`` distinct failure kinds are kept per domain and day (further ones are
   counted in the summary only), so a hostile domain cannot grow the file without bound.
3. ``report_json`` builds the RFC 8460 §4.4 JSON; ``report_message`` the RFC 8460 §5.3 mail:
   ``multipart/report; report-type="tlsrpt"`` with the gzipped JSON as
   ``application/tlsrpt+gzip``, named ``submitter!domain!begin!end!id.json.gz`` (§5.1), and the
   ``TLS-Report-Domain`` / ``TLS-Report-Submitter`` header fields.

What can go wrong: nothing raises for any TXT input; a tally read back from disk is checked
field by field (``Tally.from_json`` raises ValueError on a wrong type).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from typing import Literal

PolicyType = Literal["sts", "tlsa", "no-policy-found"]
# RFC 8460 §4.3 result types
ResultType = Literal[
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
    "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
    "sts-policy-invalid", "sts-webpki-invalid",
]
# RFC 5322 §2.1.1: lines SHOULD stay within 78 characters, MUST within 998; the report's Subject
# (RFC 8460 §5.3) is often longer than 78, and folding it inside its first word garbles it.
REPORT_POLICY = SMTP.clone(max_line_length=998)
MAX_FAILURE_KINDS = 100  # per domain and day: what a report needs to be useful, and a bound


def parse_rua(records: list[str]) -> list[str]:
    """Rule 1: the mailto addresses (without ``mailto:``) to send reports to."""
    rpt = [r for r in records if r.startswith("v=TLSRPTv1")]
    if len(rpt) != 1:
        return []
    out = []
    for part in rpt[0].split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key.strip() == "rua":
            for uri in value.split(","):
                uri = uri.strip()
                if uri.lower().startswith("mailto:") and "@" in uri:
                    address = uri[7:].split("?", 1)[0]
                    if address and all(ch.isprintable() and not ch.isspace() for ch in address):
                        out.append(address)
    return out


@dataclass
class Tally:
    """Rule 2."""

    policy_type: PolicyType
    policy_strings: list[str] = field(default_factory=list)
    mx_hosts: list[str] = field(default_factory=list)
    success: int = 0
    failure: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # "result|ip|mx" → count

    def add(self, ok: bool, result: ResultType | None = None, ip: str = "", mx: str = "") -> None:
        if ok:
            self.success += 1
            return
        self.failure += 1
        key = f"{result or 'validation-failure'}|{ip}|{mx}"
        if key in self.failures or len(self.failures) < MAX_FAILURE_KINDS:
            self.failures[key] = self.failures.get(key, 0) + 1

    def merge(self, other: Tally) -> None:
        """Another process's counts of the same domain and day (``reports`` rule 5)."""
        self.success += other.success
        self.failure += other.failure
        for key, count in other.failures.items():
            if key in self.failures or len(self.failures) < MAX_FAILURE_KINDS:
                self.failures[key] = self.failures.get(key, 0) + count

    def to_json(self) -> dict[str, object]:
        return {"policy_type": self.policy_type, "policy_strings": self.policy_strings,
                "mx_hosts": self.mx_hosts, "success": self.success, "failure": self.failure,
                "failures": self.failures}

    @staticmethod
    def from_json(d: object) -> Tally:
        if not isinstance(d, dict):
            raise ValueError("tally must be an object")
        ptype = d.get("policy_type")
        if ptype not in ("sts", "tlsa", "no-policy-found"):
            raise ValueError(f"bad policy_type {ptype!r}")
        strings, hosts, fails = d.get("policy_strings"), d.get("mx_hosts"), d.get("failures")
        success, failure = d.get("success"), d.get("failure")
        if not (isinstance(strings, list) and isinstance(hosts, list) and isinstance(fails, dict)
                and isinstance(success, int) and isinstance(failure, int)):
            raise ValueError("tally has a field of the wrong type")
        return Tally(ptype, [str(s) for s in strings], [str(h) for h in hosts], success, failure,
                     {str(k): int(v) for k, v in fails.items()})


def report_json(org: str, contact: str, report_id: str, day: str, domain: str, tally: Tally) -> bytes:
    """Rule 3: the RFC 8460 §4.4 report for one policy domain and one UTC day (``YYYY-MM-DD``)."""
    details = []
    for key, count in sorted(tally.failures.items()):
        result, ip, mx = key.split("|", 2)
        item: dict[str, object] = {"result-type": result, "failed-session-count": count}
        if ip:
            item["sending-mta-ip"] = ip
        if mx:
            item["receiving-mx-hostname"] = mx
        details.append(item)
    policy: dict[str, object] = {"policy-type": tally.policy_type, "policy-domain": domain}
    if tally.policy_strings:
        policy["policy-string"] = tally.policy_strings
    if tally.mx_hosts:
        policy["mx-host"] = tally.mx_hosts
    doc = {
        "organization-name": org,
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": contact,
        "report-id": report_id,
        "policies": [{
            "policy": policy,
            "summary": {"total-successful-session-count": tally.success,
                        "total-failure-session-count": tally.failure},
            "failure-details": details,
        }],
    }
    return json.dumps(doc, indent=1).encode()


def report_message(org: str, sender: str, rua: list[str], report_id: str, day: str, domain: str,
                   tally: Tally, begin: int, end: int, date: str, message_id: str) -> EmailMessage:
    """Rule 3: the report mail (``begin``/``end``: the day's bounds as UNIX times)."""
    body = report_json(org, sender, report_id, day, domain, tally)
    msg = EmailMessage(policy=REPORT_POLICY)
    msg["From"] = sender
    msg["To"] = ", ".join(rua)
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["Subject"] = f"Report Domain: {domain} Submitter: {org} Report-ID: <{report_id}>"
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = org
    msg.set_content(f"TLS report for {domain} on {day} (RFC 8460), from {org}.\n")
    msg.add_attachment(gzip.compress(body, mtime=0), maintype="application", subtype="tlsrpt+gzip",
                       filename=f"{org}!{domain}!{begin}!{end}!{report_id}.json.gz")
    msg.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"; boundary="'
                       + str(msg.get_boundary()) + '"')
    return msg
