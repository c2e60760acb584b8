"""The server's own report sending: the due TLS-RPT (and DMARC) reports, once a day.

Rules:
1. The composition: a ``reports.schedule.ReportTimer`` on the server's clock calls
   ``ServerReports.send_due``, which runs every kind of ``reports.registry.REPORT_SENDERS``
   (the same registry as ``pigeon reports send``). Only the server runs it, never a worker:
   one sender per data directory. ``[reports] send = false`` turns it off.
2. Before the senders read the counts on disk, the relay's in-memory TLS-RPT counts are flushed
   (``ReportBook.flush``): yesterday's last sessions are in the report.
3. A report enters the queue through the server's intake, as ``pigeon sendmail`` mail does:
   client ``local``, the submission fix-ups (Message-ID, Date), the commit point, then the
   queue manager. The relay therefore signs it with the From domain's DKIM keys
   (``delivery.outbound`` rule 3; RFC 8460 §3 requires the signature).
4. One send at a time (a lock): the timer and a future control-socket call never overlap.

What can go wrong: a refused recipient or an I/O error while queueing makes ``submit`` answer
False (logged); the report stays due for the next run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pigeon.cleanup.intake import Intake
from pigeon.config import Config
from pigeon.core.address import AddressError, parse_address
from pigeon.core.clock import Clock
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.core.results import MailError
from pigeon.dns.resolver import DnsResolver
from pigeon.delivery.tlspolicy.reports import ReportBook
from pigeon.queue.record import QueueRecord
from pigeon.reports.registry import ReportOutcome, ReportRun, send_reports

log = logging.getLogger("pigeon.reports")


class ServerReports:
    def __init__(self, config: Callable[[], Config], clock: Clock, resolver: DnsResolver, intake: Intake,
                 on_queued: Callable[[QueueRecord], None], tls_counts: ReportBook) -> None:
        self.config = config
        self.clock = clock
        self.resolver = resolver
        self.intake = intake
        self.on_queued = on_queued
        self.tls_counts = tls_counts
        self._lock = asyncio.Lock()

    async def submit(self, sender: str, recipients: list[str], message: bytes) -> bool:
        """Rule 3."""
        try:
            envelope = Envelope(sender=parse_address(sender), client=ClientInfo("local", "", "local"))
            txn = self.intake.begin(envelope, add_missing_headers=True)
            try:
                for rcpt in recipients:
                    txn.add_rcpt(Recipient(parse_address(rcpt)))
                txn.write(message)
            except BaseException:
                txn.abort()
                raise
            record = await txn.commit()
        except (AddressError, MailError, OSError) as exc:
            log.error("reports: cannot queue a report from %s to %s: %s", sender, ", ".join(recipients), exc)
            return False
        self.on_queued(record)
        return True

    async def send_due(self) -> list[ReportOutcome]:
        """Rules 1, 2 and 4."""
        async with self._lock:
            await asyncio.to_thread(self.tls_counts.flush)
            run = ReportRun(self.config(), self.clock, self.resolver, self.submit)
            outcomes = await send_reports(run)
        for outcome in outcomes:
            for line in outcome.lines:
                log.info("reports: %s", line)
            log.info("reports: kind=%s sent=%d failed=%d", outcome.kind, outcome.sent, outcome.failures)
        return outcomes
