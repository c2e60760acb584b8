"""``pigeon reports send``: send the reports that are due now (TLS-RPT and DMARC aggregate).

Rules:
1. The kinds come from ``pigeon.reports.registry.REPORT_SENDERS``, the registry the running
   server's daily task uses too (``app.reports``): ``pigeon reports send`` runs every kind (or
   only those named with ``--kind``).
2. Reports are mail like any other: they enter our own queue through the sendmail maildrop
   (``admin.sendmail.run``: the control socket of the running server, or the queue directly
   when it is stopped) and leave through the relay, where the DKIM signing stage signs mail
   from this machine (client ``local``) with the local From domain's keys.
3. Exit status 0 when every sender succeeded, 1 otherwise; one line per report (or reason).

What can go wrong: DNS failures keep the day's counts for the next run; a refused submission
prints sendmail's message and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys

from pigeon.admin import sendmail
from pigeon.clocks import SystemClock
from pigeon.config import Config
from pigeon.dns.resolver import DnsResolver
from pigeon.reports.registry import REPORT_SENDERS, ReportRun, send_reports


def cmd_reports_send(args: argparse.Namespace, config: Config) -> int:
    clock = SystemClock()
    resolver = DnsResolver([(e.host, e.port) for e in config.dns.nameservers], clock)

    async def submit(sender: str, recipients: list[str], message: bytes) -> bool:
        options = sendmail.Options(recipients=list(recipients), sender=sender, ignore_dots=True)
        err = io.StringIO()
        status = await asyncio.to_thread(sendmail.run, options, config, io.BytesIO(message), err)
        if status != 0:
            print(f"pigeon: reports: {err.getvalue().strip()}", file=sys.stderr)
        return status == 0

    outcomes = asyncio.run(send_reports(ReportRun(config, clock, resolver, submit), args.kind))
    for outcome in outcomes:
        for line in outcome.lines:
            print(line)
        print(f"{outcome.kind}: {outcome.sent} report(s) queued")
    return 1 if any(o.failures for o in outcomes) else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    """Add ``pigeon reports send`` to the command line."""
    p = subparsers.add_parser("reports", parents=[common], help="aggregate reports (TLS-RPT, DMARC)")
    rs = p.add_subparsers(dest="reports_command", metavar="COMMAND")
    rs.required = True
    s = rs.add_parser("send", parents=[common], help="send the reports that are due now")
    s.add_argument("--kind", action="append", choices=sorted(REPORT_SENDERS),
                   help="only this kind of report (repeatable; default: all)")
    s.set_defaults(handler=cmd_reports_send)
