"""DMARC aggregate reports (RFC 7489 §7.2): each evaluation recorded, and sent once a day as
gzipped XML to the ``rua`` addresses of the domain's policy, through our own queue.

Rules:
1. ``Recorder.record`` adds one JSON line (``Evaluation.to_line``) for
   ``data_dir/reports/dmarc/<owner>.jsonl``, one file per process (``main``, ``w<index>``).
   Lines are gathered in memory and written by ``flush``, whole lines only, with one ``write``
   on an ``O_APPEND`` descriptor: ``FLUSH_DELAY`` seconds after the first line gathered (a
   timer of the running event loop), at once when ``MAX_PENDING`` octets are waiting, at once
   when no event loop runs (tests, tools), and by ``close`` (the process's orderly stop). So a
   line is whole or absent after a crash of the process; a crash (``kill -9``) drops the lines
   of its last ``FLUSH_DELAY`` seconds at most, a power loss those since the last
   ``fdatasync`` (at most every ``SYNC_EVERY`` seconds). They are statistics for the reports,
   not mail: the message itself is committed by the queue as always. One write per batch
   instead of one per message: inside the busy server a small ``write`` to ext4 costs many
   times what it costs in a quiet loop (docs/benchmarks.md, issue 16 "Measure").
2. ``send_due`` takes every file (renamed to ``sending-…`` first: new evaluations go to a new
   file meanwhile), groups the evaluations by policy domain and ``rua`` address, builds one
   report per pair (Appendix C's XML: rows grouped by source IP, identifiers and results, with
   a count), and hands each to ``submit`` as an RFC 5322 message with the report gzipped as an
   attachment named ``receiver!policy-domain!begin!end.xml.gz`` (§7.2.1.1). Once every report
   is queued the taken files are removed; a crash before that sends them again (at least once).
3. External destinations (§7.1): a ``rua`` in another organisational domain than the policy's
   is used only when ``<policy-domain>._report._dmarc.<rua-domain>`` has a TXT record starting
   ``v=DMARC1``; a lookup failure skips that address for this run (its evaluations are dropped
   with a log line, as they are for an address that fails the check).
4. Only ``mailto:`` URIs are used (§6.2); a size limit suffix (``!10m``) is honoured by not
   sending a larger report.
5. The report is from ``noreply-dmarc@<hostname>``, in the header and in MAIL FROM (RFC 7489
   §7.2.1.1 wants a From the receiver can reply to; a bounce of a report goes there).

What can go wrong: unreadable lines are logged and skipped; a ``submit`` that raises stops the
run and leaves the taken files for the next one (they are picked up again).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from pigeon.durable.io import REAL
from pigeon.inbound.evaluation import Evaluation, Published
from pigeon.inbound.seams import DnsblDns
from pigeon.mailauth.orgdomain import OrgDomains, bundled

log = logging.getLogger(__name__)

SYNC_EVERY = 5.0  # rule 1: seconds between fdatasyncs of the evaluation file
# Rule 1: how long a recorded line may wait in memory, and how many octets may wait. 0.5 s keeps
# what a crash can drop small; at 1,000 messages/s it still makes one write of ~150 KB at most,
# hence the cap: 64 KiB is about 200 lines (~330 octets each).
FLUSH_DELAY = 0.5
MAX_PENDING = 64 * 1024
MAX_LINE = 64 * 1024  # a recorded line: a few hundred octets; a longer one is not ours


def reports_dir(data_dir: Path) -> Path:
    return data_dir / "reports" / "dmarc"


class Recorder:
    """Rule 1."""

    def __init__(self, directory: Path, owner: str, now: Callable[[], float] = time.time) -> None:
        self._dir = directory
        self._owner = owner
        self._now = now
        self._fd = -1
        self._synced = 0.0
        self._pending = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> int:
        if self._fd < 0:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self._dir / f"{self._owner}.jsonl",
                               os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def record(self, evaluation: Evaluation) -> None:
        self._pending += evaluation.to_line()
        if len(self._pending) >= MAX_PENDING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: write through
            self.flush()
            return
        if self._timer is None or self._timer_loop is not loop:  # (a timer of a finished loop never runs)
            self._timer, self._timer_loop = loop.call_later(FLUSH_DELAY, self.flush), loop

    def flush(self) -> None:
        """Rule 1: the gathered lines to the file, in one write."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._pending = bytes(self._pending), bytearray()
        if not lines:
            return
        try:
            fd = self._open()
            if os.fstat(fd).st_nlink == 0:  # taken and sent by send_due meanwhile: a new file
                self._close_fd()
                fd = self._open()
            os.write(fd, lines)
            now = self._now()
            if now - self._synced >= SYNC_EVERY and self._fd >= 0:
                REAL.fdatasync(self._fd)  # Rule 1: at most SYNC_EVERY of lines lost in a power cut
                self._synced = now
        except OSError as exc:
            log.error("dmarc reports: recording %d evaluation(s) failed: %s", lines.count(b"\n"), exc)
            self._close_fd()

    def close(self) -> None:
        """Rule 1: what is gathered is written, and the file closed."""
        self.flush()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Report:
    policy: Published
    rua: str  # the mailto address (without mailto: and size suffix)
    limit: int  # octets, 0 = none
    begin: int
    end: int
    evaluations: tuple[Evaluation, ...]


def _mailto(uri: str) -> tuple[str, int] | None:
    """Rule 4: (address, size limit) of a ``mailto:`` URI, else None."""
    uri = uri.strip()
    if not uri.lower().startswith("mailto:"):
        return None
    addr, _, size = uri[7:].partition("!")
    limit = 0
    if size:
        units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
        num, unit = (size[:-1], size[-1].lower()) if size[-1].isalpha() else (size, "")
        if num.isdigit():
            limit = int(num) * units.get(unit, 1)
    if "@" not in addr:
        return None
    return addr, limit


async def verified(dns: DnsblDns, policy_domain: str, rua: str, orgs: OrgDomains | None = None) -> bool:
    """Rule 3 (organisational domains as DMARC finds them: ``mailauth.orgdomain``)."""
    orgs = orgs or bundled()
    rua_domain = rua.rpartition("@")[2].lower()
    if orgs.org_domain(rua_domain) == orgs.org_domain(policy_domain):
        return True
    name = f"{policy_domain}._report._dmarc.{rua_domain}"
    try:
        records = await dns.txt(name)
    except Exception as exc:
        log.warning("dmarc reports: %s: verification lookup failed (%s); not sending there", name, exc)
        return False
    return any(r.strip().lower().startswith(b"v=dmarc1") for r in records)


def group(evaluations: Iterable[Evaluation]) -> list[Report]:
    """Rule 2: one report per (policy domain, rua address)."""
    by: dict[tuple[str, str], list[Evaluation]] = {}
    limits: dict[tuple[str, str], tuple[Published, int]] = {}
    for ev in evaluations:
        for uri in ev.policy.rua:
            parsed = _mailto(uri)
            if parsed is None:
                continue
            key = (ev.policy.domain, parsed[0].lower())
            by.setdefault(key, []).append(ev)
            limits[key] = (ev.policy, parsed[1])
    out = []
    for key, evs in sorted(by.items()):
        policy, limit = limits[key]
        out.append(Report(policy, key[1], limit, int(min(e.when for e in evs)),
                          int(max(e.when for e in evs)) + 1, tuple(evs)))
    return out


def _x(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def report_xml(report: Report, org_name: str, email: str, report_id: str) -> bytes:
    """RFC 7489 Appendix C."""
    p = report.policy
    rows: dict[tuple[str, str, bool, bool, str, str, tuple[tuple[str, str, str], ...], str, str, str, str],
               int] = {}
    for e in report.evaluations:
        key = (e.source_ip, e.disposition, e.dkim_aligned, e.spf_aligned, e.header_from, e.envelope_from,
               e.dkim, e.spf_domain, e.spf_scope, e.spf_result, e.override)
        rows[key] = rows.get(key, 0) + 1
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<feedback>", "<version>1.0</version>",
             "<report_metadata>", _x("org_name", org_name), _x("email", email), _x("report_id", report_id),
             "<date_range>", _x("begin", report.begin), _x("end", report.end), "</date_range>",
             "</report_metadata>",
             "<policy_published>", _x("domain", p.domain), _x("adkim", p.adkim), _x("aspf", p.aspf),
             _x("p", p.p), _x("sp", p.sp or p.p), _x("pct", p.pct), "</policy_published>"]
    for key, count in rows.items():
        ip, disp, da, sa, hfrom, env, dkim, spf_d, spf_scope, spf_r, override = key
        parts += ["<record>", "<row>", _x("source_ip", ip), _x("count", count), "<policy_evaluated>",
                  _x("disposition", disp), _x("dkim", "pass" if da else "fail"),
                  _x("spf", "pass" if sa else "fail")]
        if override:
            parts += ["<reason>", _x("type", override), "</reason>"]
        parts += ["</policy_evaluated>", "</row>", "<identifiers>", _x("envelope_from", env),
                  _x("header_from", hfrom), "</identifiers>", "<auth_results>"]
        for domain, selector, result in dkim:
            parts += ["<dkim>", _x("domain", domain), _x("selector", selector), _x("result", result), "</dkim>"]
        parts += ["<spf>", _x("domain", spf_d), _x("scope", spf_scope), _x("result", spf_r), "</spf>",
                  "</auth_results>", "</record>"]
    parts.append("</feedback>")
    return "\n".join(parts).encode("utf-8")


def report_message(report: Report, hostname: str, org_name: str, sender: str, now: float) -> tuple[str, bytes]:
    """Rule 2: (report id, the RFC 5322 message with the gzipped report attached)."""
    report_id = f"{int(now)}.{uuid.uuid4().hex[:16]}@{hostname}"
    xml = report_xml(report, org_name, sender, report_id)
    filename = f"{hostname}!{report.policy.domain}!{report.begin}!{report.end}.xml.gz"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = report.rua
    msg["Date"] = format_datetime(datetime.fromtimestamp(now, timezone.utc))
    msg["Message-ID"] = make_msgid(domain=hostname)
    # RFC 7489 §7.2.1.1: the Subject names the report domain, the submitter and the report id.
    msg["Subject"] = f"Report Domain: {report.policy.domain} Submitter: {org_name} Report-ID: <{report_id}>"
    msg.set_content(f"DMARC aggregate report for {report.policy.domain} from {org_name}.\n")
    msg.add_attachment(gzip.compress(xml, mtime=int(now)), maintype="application", subtype="gzip",
                       filename=filename)
    data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    return report_id, data


Submit = Callable[[str, str, bytes], Awaitable[str]]  # (from, to, message) → queue id


def take(directory: Path) -> list[Path]:
    """Rule 2: the recorded files, renamed so that new evaluations start new files."""
    if not directory.is_dir():
        return []
    taken: list[Path] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith("sending-"):
            taken.append(path)  # left by a run that did not finish
        elif path.suffix == ".jsonl":
            target = path.with_name(f"sending-{time.time_ns()}-{path.name}")
            os.rename(path, target)
            taken.append(target)
    return taken


def read(paths: Iterable[Path]) -> list[Evaluation]:
    out: list[Evaluation] = []
    for path in paths:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if len(line) > MAX_LINE or not line.endswith(b"\n"):
                    log.warning("dmarc reports: %s line %d is cut or too long; skipped", path.name, n)
                    continue
                try:
                    out.append(Evaluation.from_json(json.loads(line)))
                except ValueError as exc:
                    log.warning("dmarc reports: %s line %d: %s; skipped", path.name, n, exc)
    return out


async def send_due(directory: Path, dns: DnsblDns, submit: Submit, hostname: str, org_name: str,
                   now: float) -> list[str]:
    """Rules 2-5: every report recorded so far; returns the queue ids of the report messages."""
    paths = take(directory)
    if not paths:
        return []
    sender = f"noreply-dmarc@{hostname}"
    queued: list[str] = []
    orgs = bundled()
    for report in group(read(paths)):
        if not await verified(dns, report.policy.domain, report.rua, orgs):
            log.warning("dmarc reports: %s for %s: external destination not verified (RFC 7489 §7.1); dropped",
                        report.rua, report.policy.domain)
            continue
        report_id, message = report_message(report, hostname, org_name or hostname, sender, now)
        if report.limit and len(message) > report.limit:
            log.warning("dmarc reports: report for %s is %d octets, over %s's limit; dropped",
                        report.policy.domain, len(message), report.rua)
            continue
        qid = await submit(sender, report.rua, message)
        log.info("dmarc reports: %s queued as %s for %s (%d evaluations)", report_id, qid, report.rua,
                 len(report.evaluations))
        queued.append(qid)
    for path in paths:
        path.unlink(missing_ok=True)
    return queued

