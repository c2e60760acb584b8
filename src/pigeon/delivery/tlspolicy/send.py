"""Sending the due TLS-RPT reports (RFC 8460 §3, §5): one mail per policy domain and day.

Rules:
1. For each finished day's tally (``ReportBook.due``), the ``rua`` of ``_smtp._tls.<domain>``
   TXT is looked up through Pigeon's resolver; its mailto addresses get one report mail
   (``tlsrpt.report_message``). No record, or no mailto → nothing is sent for that domain (a
   line says so). A DNS failure keeps the day for the next run.
2. The mail is handed to ``submit(message, sender, recipients)``: the caller's road into our
   own queue (``pigeon reports send`` uses the sendmail maildrop). The sender is
   ``postmaster@<first local domain>`` (RFC 8460 §5.3: "an address that can receive replies"):
   mail from a local domain, which the DKIM signing stage signs on its way out — that is the
   DKIM hook (RFC 8460 §5.3 requires a DKIM signature; nothing is signed here).
3. A day is marked done only when every domain of it was handled.

What can go wrong: ``submit`` raising OSError or returning False keeps the day; the count of
reports sent and a list of lines for the operator come back.
"""

from __future__ import annotations

import calendar
import datetime
import secrets
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import format_datetime

from pigeon.core.clock import Clock
from pigeon.delivery.tlspolicy.mtasts import texts
from pigeon.delivery.tlspolicy.reports import ReportBook, utc_day
from pigeon.delivery.tlspolicy.tlsrpt import parse_rua, report_message
from pigeon.dns.resolver import DnsError, DnsTempError
from pigeon.delivery.tlspolicy.sts import TxtResolver

Submit = Callable[[EmailMessage, str, list[str]], Awaitable[bool]]


async def send_due(book: ReportBook, resolver: TxtResolver, clock: Clock, org: str, sender: str,
                   submit: Submit) -> tuple[int, list[str]]:
    """Rules 1-3."""
    lines: list[str] = []
    sent = 0
    now = clock.now()
    pending: dict[str, bool] = {}
    for day, domain, tally in book.due(utc_day(now)):
        ok = pending.setdefault(day, True)
        try:
            rua = parse_rua(texts(await resolver.txt(f"_smtp._tls.{domain}")))
        except DnsTempError as exc:
            lines.append(f"tls {day} {domain}: DNS failure ({exc}); kept for the next run")
            pending[day] = False
            continue
        except DnsError:
            rua = []
        if not rua:
            lines.append(f"tls {day} {domain}: no TLS-RPT mailto rua published; no report")
            continue
        begin = calendar.timegm(datetime.date.fromisoformat(day).timetuple())
        report_id = f"{day}.{domain}.{secrets.token_hex(6)}@{org}"
        date = format_datetime(datetime.datetime.fromtimestamp(now, datetime.timezone.utc))
        msg = report_message(org, sender, rua, report_id, day, domain, tally, begin, begin + 86399, date,
                             f"<{report_id}>")
        try:
            done = await submit(msg, sender, rua)
        except OSError as exc:
            done = False
            lines.append(f"tls {day} {domain}: cannot submit ({exc})")
        if done:
            sent += 1
            lines.append(f"tls {day} {domain}: report queued for {', '.join(rua)} "
                         f"({tally.success} successful, {tally.failure} failed sessions)")
        else:
            pending[day] = False
        pending[day] = pending[day] and ok and done
    for day, ok in pending.items():
        if ok:
            book.done(day)
    return sent, lines
