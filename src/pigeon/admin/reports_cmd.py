"""``pigeon reports send``: send the reports that are due now (TLS-RPT and DMARC aggregate).

Rules:
1. ``REPORT_SENDERS`` is the registry: a name (``tls``, ``dmarc``) → a function
   ``(config, stdout) -> exit status`` that sends what is due of that kind. ``pigeon reports
   send`` runs every sender (or only those named with ``--kind``); another kind of report adds
   itself with one entry and nothing else changes.
2. Reports are mail like any other: they enter our own queue through the sendmail maildrop
   (``admin.sendmail.run``: the control socket of the running server, or the queue directly
   when it is stopped) and leave through the relay, where the DKIM signing stage signs mail
   from a local domain.
3. Exit status 0 when every sender succeeded, 1 otherwise; one line per report (or reason).
4. DMARC aggregate reports (RFC 7489 §7.2, ``pigeon.inbound.reports``) are built and queued by
   the running server from the evaluations its processes recorded (control command
   ``reports.send``, under the server's own lock against its daily run); with the server
   stopped this command builds them itself and queues them like the TLS reports (rule 2).

What can go wrong: DNS failures keep the day's counts for the next run; a refused submission
prints sendmail's message and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from collections.abc import Callable
from email.message import EmailMessage
from typing import TextIO

from pigeon.admin import sendmail
from pigeon.clocks import SystemClock
from pigeon.config import Config
from pigeon.control.client import ControlError, ControlUnavailable, call, server_running
from pigeon.delivery.tlspolicy.reports import ReportBook
from pigeon.delivery.tlspolicy.send import send_due
from pigeon.delivery.tlspolicy.tlsrpt import REPORT_POLICY
from pigeon.dns.resolver import DnsResolver
from pigeon.inbound.reports import reports_dir
from pigeon.inbound.reports import send_due as dmarc_send_due

ReportSender = Callable[[Config, TextIO], int]


def report_sender_address(config: Config) -> str:
    return f"postmaster@{config.domains[0] if config.domains else config.hostname}"


def send_tls_reports(config: Config, out: TextIO) -> int:
    """The TLS-RPT sender (RFC 8460): every finished day's counts in ``<data_dir>/tlspolicy``."""
    clock = SystemClock()
    resolver = DnsResolver([(e.host, e.port) for e in config.dns.nameservers], clock)
    book = ReportBook(config.data_dir / "tlspolicy", clock)
    failures = 0

    async def submit(msg: EmailMessage, sender: str, rcpts: list[str]) -> bool:
        nonlocal failures
        options = sendmail.Options(recipients=list(rcpts), sender=sender, ignore_dots=True)
        err = io.StringIO()
        data = msg.as_bytes(policy=REPORT_POLICY)
        status = await asyncio.to_thread(sendmail.run, options, config, io.BytesIO(data), err)
        if status != 0:
            failures += 1
            print(f"pigeon: reports: {err.getvalue().strip()}", file=sys.stderr)
        return status == 0

    sent, lines = asyncio.run(send_due(book, resolver, clock, config.hostname, report_sender_address(config),
                                       submit))
    for line in lines:
        print(line, file=out)
    print(f"tls: {sent} report(s) queued", file=out)
    return 1 if failures else 0


def send_dmarc_reports(config: Config, out: TextIO) -> int:
    """Rule 4: the DMARC aggregate reports due now, queued by the running server."""
    try:
        ids = call(config.data_dir, "reports.send", 120.0)
    except ControlUnavailable:
        if server_running(config.data_dir):
            print("pigeon: dmarc reports: the server holds the data directory but its control socket "
                  "does not answer", file=sys.stderr)
            return 1
        return _send_dmarc_offline(config, out)
    except ControlError as exc:
        print(f"pigeon: dmarc reports: {exc}", file=sys.stderr)
        return 1
    queued = ids if isinstance(ids, list) else []
    for qid in queued:
        print(f"{qid}: DMARC aggregate report queued", file=out)
    print(f"dmarc: {len(queued)} report(s) queued", file=out)
    return 0


def _send_dmarc_offline(config: Config, out: TextIO) -> int:
    """Rule 4, server stopped: the recorded evaluations → reports → our queue via the maildrop."""
    clock = SystemClock()
    resolver = DnsResolver([(e.host, e.port) for e in config.dns.nameservers], clock)
    failures = 0

    async def submit(sender: str, rua: str, message: bytes) -> str:
        nonlocal failures
        options = sendmail.Options(recipients=[rua], sender=sender, ignore_dots=True)
        err = io.StringIO()
        status = await asyncio.to_thread(sendmail.run, options, config, io.BytesIO(message), err)
        if status != 0:
            failures += 1
            print(f"pigeon: dmarc reports: {err.getvalue().strip()}", file=sys.stderr)
        return "maildrop" if status == 0 else "not queued"

    ids = asyncio.run(dmarc_send_due(reports_dir(config.data_dir), resolver, submit, config.hostname,
                                     config.inbound.report_org, clock.now()))
    print(f"dmarc: {len(ids) - failures} report(s) queued", file=out)
    return 1 if failures else 0


#: Rule 1: the kinds of report this command sends.
REPORT_SENDERS: dict[str, ReportSender] = {"tls": send_tls_reports, "dmarc": send_dmarc_reports}


def cmd_reports_send(args: argparse.Namespace, config: Config) -> int:
    kinds = args.kind or list(REPORT_SENDERS)
    status = 0
    for kind in kinds:
        status |= REPORT_SENDERS[kind](config, sys.stdout)
    return status


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
