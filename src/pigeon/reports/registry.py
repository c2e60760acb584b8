"""The registry of report kinds: one place that both ``pigeon reports send`` (``pigeon.admin``)
and the running server's daily task (``pigeon.app``) import, so neither imports the other.

Rules:
1. ``REPORT_SENDERS`` maps a kind (``tls``, ``dmarc``) to an async
   sender ``(ReportRun) -> ReportOutcome`` that sends everything of that kind that is due now.
   What is due, and what was sent already, lives on disk with the kind's counts (TLS-RPT:
   ``<data_dir>/tlspolicy``, ``.sent`` markers), so any number of runs, from the command line
   or the server, before or after a restart, send each report once.
2. A ``ReportRun`` carries what every sender needs: the configuration, the clock, the
   resolver, and ``submit(sender, recipients, message) -> bool``, the caller's road into our
   own queue. The command line submits through the sendmail maildrop; the server through its
   intake with client ``local``. Both are mail from this machine, which the relay's signing
   stage DKIM-signs with the local From domain's keys (``delivery.outbound`` rule 3;
   RFC 8460 §3: reports MUST be DKIM-signed; RFC 7489 §7.2 for DMARC).
3. ``send_reports`` runs the kinds asked for (default: all, in registry order). A sender that
   raises is an outcome with one failure and a log line; the other kinds still run.
4. The sender address is ``postmaster@<first local domain>`` (else of the hostname): an address
   of ours that can receive replies (RFC 8460 §5.3).

What can go wrong: DNS failures keep the day's counts for the next run (the kind's own rule);
a refused submission is a failure in the outcome, and the report stays due.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

from pigeon.config import Config
from pigeon.core.clock import Clock
from pigeon.delivery.tlspolicy.reports import ReportBook
from pigeon.delivery.tlspolicy.send import send_due
from pigeon.delivery.tlspolicy.tlsrpt import REPORT_POLICY
from pigeon.dns.resolver import DnsResolver
from pigeon.inbound.reports import reports_dir
from pigeon.inbound.reports import send_due as dmarc_send_due

log = logging.getLogger(__name__)


class ReportSubmit(Protocol):
    """Rule 2: queue one report mail; True once it is in the queue (after its commit point)."""

    async def __call__(self, sender: str, recipients: list[str], message: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class ReportRun:
    config: Config
    clock: Clock
    resolver: DnsResolver  # the process's resolver ([dns] nameservers): every kind's lookups
    submit: ReportSubmit


@dataclass(slots=True)
class ReportOutcome:
    kind: str
    sent: int = 0
    failures: int = 0
    lines: list[str] = field(default_factory=list)


ReportSender = Callable[[ReportRun], Awaitable[ReportOutcome]]


def report_sender_address(config: Config) -> str:
    """Rule 4."""
    return f"postmaster@{config.domains[0] if config.domains else config.hostname}"


def tls_book(config: Config, clock: Clock) -> ReportBook:
    """The TLS-RPT counts on disk (``delivery.tlspolicy.reports``), as the relay writes them."""
    return ReportBook(config.data_dir / "tlspolicy", clock)


async def send_tls_reports(run: ReportRun) -> ReportOutcome:
    """The TLS-RPT sender (RFC 8460): every finished day's counts in ``<data_dir>/tlspolicy``."""
    outcome = ReportOutcome("tls")

    async def submit(msg: EmailMessage, sender: str, rcpts: list[str]) -> bool:
        data = msg.as_bytes(policy=REPORT_POLICY)
        ok = await run.submit(sender, list(rcpts), data)
        if not ok:
            outcome.failures += 1
        return ok

    outcome.sent, outcome.lines = await send_due(
        tls_book(run.config, run.clock), run.resolver, run.clock, run.config.hostname,
        report_sender_address(run.config), submit)
    return outcome


async def send_dmarc_reports(run: ReportRun) -> ReportOutcome:
    """The DMARC aggregate sender (RFC 7489 §7.2): every evaluation the processes recorded so far
    (``inbound.reports``), grouped per policy domain and ``rua``; off with ``[inbound] reports =
    false``."""
    outcome = ReportOutcome("dmarc")
    cfg = run.config
    if not cfg.inbound.reports:
        outcome.lines.append("dmarc: reports are off ([inbound] reports = false)")
        return outcome

    async def submit(sender: str, rua: str, message: bytes) -> str:
        if await run.submit(sender, [rua], message):
            outcome.sent += 1
            return "queued"
        outcome.failures += 1
        return "not queued"

    await dmarc_send_due(reports_dir(cfg.data_dir), run.resolver, submit, cfg.hostname,
                         cfg.inbound.report_org, run.clock.now())
    return outcome


#: Rule 1: the kinds of report, in the order they run.
REPORT_SENDERS: dict[str, ReportSender] = {"tls": send_tls_reports, "dmarc": send_dmarc_reports}


async def send_reports(run: ReportRun, kinds: Sequence[str] | None = None) -> list[ReportOutcome]:
    """Rule 3."""
    outcomes = []
    for kind in kinds or list(REPORT_SENDERS):
        try:
            outcomes.append(await REPORT_SENDERS[kind](run))
        except Exception as exc:  # one kind's bug must not stop the others (rule 3)
            log.exception("reports: sending the %s reports failed", kind)
            outcomes.append(ReportOutcome(kind, failures=1, lines=[f"{kind}: failed ({exc})"]))
    return outcomes
