"""The verdict on a message arriving on port 25: SPF, DKIM, ARC, DMARC, our own domains,
milters; written down in Authentication-Results and acted upon (DESIGN.md "mailauth: the
verdict", between smtpd and cleanup's commit).

Where it runs (docs/architecture.md "Inbound checks"): ``smtpd.session`` asks ``dnsbl`` when a
client connects (answered at EHLO/HELO), starts ``spf`` at MAIL FROM (a task: the lookups run
while the client sends RCPT and DATA; but when the SPF record is in the DNS cache already, the
check runs inline at the end of the message: no lookup to overlap, and no task to pay for,
docs/benchmarks.md issue 16 "Measure"), and calls ``end_of_message`` once DATA/BDAT ended and
the message is spooled in its cleanup transaction, before ``commit``. Worker processes build
their own ``Verdicts`` (``app.services``): nothing here is shared between processes but the
recorder's directory.

Rules:
1. Only the ``smtp`` service (port 25) is checked; a client in ``[inbound] trusted_networks``
   is not (no lookups, no header), loopback included only when listed.
2. SPF checks MAIL FROM, or the HELO name for ``<>`` (RFC 7208 §2.4); DKIM and ARC the
   spooled message; DMARC the header From domain with both (RFC 7489 §6.6). A message larger
   than ``MAX_VERIFIED`` is not read into memory for DKIM/ARC: its DKIM is ``none``, and a
   DMARC failure it then has is not acted on (logged), so no large message is refused for a
   check it did not get.
3. DMARC ``fail`` with disposition ``reject`` → ``550 5.7.1`` and nothing queued; with
   ``quarantine`` → the recipients' Junk folder (RFC 7489 §6.3, §6.6.3 pct applied by
   ``mailauth``). A DMARC failure under a passing ARC chain whose last sealer is in
   ``trusted_arc_sealers`` is not acted on (RFC 7489 §7.2.1 ``trusted_forwarder`` override);
   the header still says ``dmarc=fail``.
4. A From domain among our local domains that does not pass DMARC is refused ``550 5.7.1``
   even without a published record (issue 16: the spoofing of our own domains); a DMARC
   ``temperror`` there is ``451 4.7.5`` (try later), never an accept.
5. One ``Authentication-Results:`` field (RFC 8601) with authserv-id = ``hostname`` and one
   ``Received-SPF:`` (RFC 7208 §9.1) go at the top of the message, above our Received:; any
   Authentication-Results already carrying our authserv-id is removed first (RFC 8601 §5).
6. Milters (``inbound.milter``) run after, in order, and see those fields. Their reject and
   tempfail answer the client; discard accepts and drops; their header edits and a replaced
   body are applied to the spooled message; a quarantine action, or ``X-Spam: yes`` /
   ``X-Spam-Flag: YES`` added by a milter, files the message into Junk.
7. Every DMARC evaluation of a domain that publishes ``rua`` is recorded for the aggregate
   reports (``inbound.reports``), refused messages included.
8. A check that raises is logged and counts as ``temperror``: never a crash, never a refusal
   of its own (rule 4 aside).

What can go wrong: nothing raises from ``end_of_message`` but the spool's ``QueueWriteError``
(the session answers ``452 4.3.1``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pigeon.cleanup.intake import Transaction
from pigeon.config import Config
from pigeon.core.reply import Reply
from pigeon.inbound import dnsbl
from pigeon.inbound.evaluation import Evaluation, published
from pigeon.inbound.headers import apply_edits, remove_forged, spam_marked, split_fields
from pigeon.inbound.milter import MessageInfo, run_milter
from pigeon.inbound.seams import ArcOutcome, AuthChecks, DkimOutcome, DmarcOutcome, DnsblDns, SpfOutcome

log = logging.getLogger(__name__)
T = TypeVar("T")
D = TypeVar("D")

# Rule 2: a message up to this size is read into memory for DKIM and ARC at the end of DATA
# (one per session at that moment). Gmail and Outlook cap messages at 25-35 MB; most signed
# mail is far smaller.
MAX_VERIFIED = 16 * 1024 * 1024
C550_DMARC_REJECT = Reply(550, "5.7.1", "Message rejected per the sender domain's DMARC policy")
C550_LOCAL_SPOOF = Reply(550, "5.7.1", "Sender address domain is ours and the message is not authenticated")
C451_LOCAL_TEMP = Reply(451, "4.7.5", "Cannot authenticate the sender domain now, try again later")
C250_DISCARDED = Reply(250, "2.0.0", "Ok: discarded")
# Rule 1: the answer of ``trusted`` is remembered per client address (asked twice per message:
# parsing the address and testing every network cost about 1 % of the CPU per message of a
# trusted client, docs/benchmarks.md "2026-12-07: the CPU regression since 11-27"). Forgotten
# whole when this many addresses are held (bounded memory under a botnet), and whenever the
# configured networks change (a reload).
MAX_TRUSTED_MEMO = 4096


@dataclass(frozen=True, slots=True)
class Client:
    ip: str
    port: int
    helo: str


@dataclass(slots=True)
class Outcome:
    """What the session does with the message."""

    refuse: Reply | None = None  # answer this, queue nothing
    discard: bool = False  # answer 250, queue nothing (a milter's discard)
    junk: bool = False
    fields: dict[str, str] = field(default_factory=dict)  # spf= dkim= dmarc= for the log
    reason: str = ""


def _temp_spf() -> SpfOutcome:
    return _Spf("temperror", "mailfrom", "", "", "check failed")


@dataclass(frozen=True, slots=True)
class _Spf:
    result: str
    identity: str
    domain: str
    sender: str
    explanation: str


def in_networks(ip: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not networks:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


class Verdicts:
    """Rules 1-8; one per process, shared by its SMTP sessions."""

    def __init__(self, config: Callable[[], Config], checks: AuthChecks | None, dns: DnsblDns | None,
                 is_local_domain: Callable[[str], bool],
                 record: Callable[[Evaluation], None] | None, now: Callable[[], float], *,
                 close: Callable[[], None] | None = None) -> None:
        self._config = config
        self._checks = checks
        self._dns = dns
        self._is_local = is_local_domain
        self._record = record
        self._now = now
        self._close = close
        self._memo: dict[str, bool] = {}
        self._memo_networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()

    def close(self) -> None:
        """The process stops: the recorder writes what it gathered (``inbound.reports`` rule 1)."""
        if self._close is not None:
            self._close()

    def trusted(self, ip: str) -> bool:
        networks = self._config().inbound.trusted_networks
        if networks is not self._memo_networks:  # a reload: what was trusted may be no longer
            self._memo = {}
            self._memo_networks = networks
        known = self._memo.get(ip)
        if known is None:
            if len(self._memo) >= MAX_TRUSTED_MEMO:
                self._memo.clear()
            known = self._memo[ip] = in_networks(ip, networks)
        return known

    # -- at connect ---------------------------------------------------------------------------

    async def dnsbl(self, ip: str) -> Reply | None:
        cfg = self._config().inbound
        if not cfg.dnsbl or self._dns is None or self.trusted(ip):
            return None
        listing = await dnsbl.lookup(self._dns, ip, cfg.dnsbl, cfg.dnsbl_timeout)
        return listing.reply(ip) if listing is not None else None

    # -- at MAIL FROM -------------------------------------------------------------------------

    def spf(self, client: Client, mail_from: str) -> asyncio.Task[SpfOutcome] | None:
        """Rule 2: the SPF check as a task; None when it is not to be done, or when it is done
        inline at the end of the message (its record is cached: no lookup to wait for)."""
        checks = self._checks
        if checks is None or not self._config().inbound.spf or self.trusted(client.ip):
            return None
        if checks.spf_cached(mail_from, client.helo):
            return None
        return asyncio.ensure_future(self._spf(client, mail_from))

    async def _spf(self, client: Client, mail_from: str) -> SpfOutcome:
        if self._checks is None:
            return _temp_spf()
        try:
            return await self._checks.check_spf(client.ip, mail_from, client.helo)
        except Exception:
            log.exception("spf check failed client=%s", client.ip)  # rule 8
            return _temp_spf()

    # -- at the end of the message ------------------------------------------------------------

    async def end_of_message(self, txn: Transaction, client: Client, mail_from: str,
                             spf_task: asyncio.Task[SpfOutcome] | None, *, crlf: bool = False) -> Outcome:
        """``crlf``: the session vouches that every line of the message ends in CRLF (no bare
        CR or LF came in), which DKIM then need not check again."""
        cfg = self._config()
        inbound = cfg.inbound
        out = Outcome()
        if not txn.complete():
            if spf_task is not None:
                spf_task.cancel()
            return out  # the transaction is refused already; commit says why
        checks = self._checks
        if checks is not None and not self.trusted(client.ip) and (inbound.spf or inbound.dkim or inbound.dmarc
                                                                    or inbound.arc):
            await self._authenticate(checks, txn, client, mail_from, spf_task, out, crlf)
            if out.refuse is not None:
                return out
        elif spf_task is not None:
            spf_task.cancel()
        if inbound.milters:
            await self._milters(txn, client, mail_from, out)
        if out.junk and out.refuse is None and not out.discard:
            txn.quarantine()
        return out

    async def _authenticate(self, checks: AuthChecks, txn: Transaction, client: Client, mail_from: str,
                            spf_task: asyncio.Task[SpfOutcome] | None, out: Outcome, crlf: bool) -> None:
        cfg = self._config()
        inbound = cfg.inbound
        too_big = txn.size > MAX_VERIFIED
        verify = (inbound.dkim or inbound.arc or inbound.dmarc) and not too_big
        message = b"".join(txn.spooled()) if verify else b""
        header = message[:txn.header_length] if verify else _head(txn)
        spf: SpfOutcome | None = None
        if inbound.spf:
            spf = await spf_task if spf_task is not None else await self._spf(client, mail_from)
        from_domain = checks.header_from_domain(header)
        dkim: Sequence[DkimOutcome] = ()
        arc: ArcOutcome | None = None
        if verify:
            if inbound.dkim or inbound.dmarc:
                dkim = await _guard(checks.verify_dkim(message, from_domain, crlf), dkim, "dkim")
            if inbound.arc:
                arc = await _guard(checks.verify_arc(message), None, "arc")
        del message
        dmarc: DmarcOutcome | None = None
        if inbound.dmarc and from_domain:
            dmarc = await _guard(checks.check_dmarc(from_domain, spf or _temp_spf(), dkim), None, "dmarc")
        out.fields = {"spf": spf.result if spf else "off",
                      "dkim": ",".join(d.result for d in dkim) or "none",
                      "dmarc": dmarc.result if dmarc else ("none" if inbound.dmarc else "off")}
        if arc is not None:
            out.fields["arc"] = arc.result
        self._decide(from_domain, dmarc, arc, too_big, out)
        if dmarc is not None:
            self._note(client, mail_from, spf, dkim, dmarc, out)
        if out.refuse is not None:
            return
        # Rule 5: the forged fields out, ours on top.
        if txn.has_field("authentication-results"):
            kept, removed = remove_forged(split_fields(header), lambda v: checks.is_ours(v, cfg.hostname))
            if removed:
                log.info("removed %d forged Authentication-Results (authserv-id %s)", removed, cfg.hostname)
                txn.replace_header(b"".join(kept))
        head = checks.authentication_results(cfg.hostname, spf, dkim, dmarc, arc)
        if spf is not None:
            head += checks.received_spf(spf, cfg.hostname, client.ip, client.helo)
        txn.prepend(head)

    def _decide(self, from_domain: str | None, dmarc: DmarcOutcome | None, arc: ArcOutcome | None,
                too_big: bool, out: Outcome) -> None:
        """Rules 3 and 4."""
        inbound = self._config().inbound
        trusted_arc = (arc is not None and arc.result == "pass" and bool(arc.sealers)
                       and arc.sealers[-1].lower() in inbound.trusted_arc_sealers)
        local = from_domain is not None and self._is_local(from_domain) and inbound.reject_local_spoofing
        result = dmarc.result if dmarc is not None else "none"
        if result == "pass":
            return
        if trusted_arc and result == "fail":
            out.reason = f"dmarc=fail not acted on: ARC sealed by {arc.sealers[-1] if arc else ''}"
            return
        if too_big and result == "fail":
            out.reason = "dmarc=fail not acted on: message too large to verify DKIM"
            return
        if local:
            out.refuse = C451_LOCAL_TEMP if result == "temperror" else C550_LOCAL_SPOOF
            out.reason = f"From: {from_domain} is a local domain, dmarc={result}"
            return
        if dmarc is None or result != "fail":
            return
        if dmarc.disposition == "reject":
            out.refuse = C550_DMARC_REJECT.with_text(
                f"Message rejected per the DMARC policy of {dmarc.from_domain} (p=reject)")
            out.reason = f"dmarc=fail p=reject header.from={dmarc.from_domain}"
        elif dmarc.disposition == "quarantine":
            out.junk = True
            out.reason = f"dmarc=fail p=quarantine header.from={dmarc.from_domain}"

    def _note(self, client: Client, mail_from: str, spf: SpfOutcome | None, dkim: Sequence[DkimOutcome],
              dmarc: DmarcOutcome, out: Outcome) -> None:
        """Rule 7."""
        if self._record is None or not self._config().inbound.reports or dmarc.record is None:
            return
        policy = published(dmarc.record, dmarc.org_domain or dmarc.from_domain)
        if not policy.rua:
            return
        disposition = "reject" if out.refuse is not None else ("quarantine" if out.junk else "none")
        env = mail_from.rpartition("@")[2] if mail_from else client.helo
        try:
            self._record(Evaluation(
                self._now(), client.ip, dmarc.from_domain, env.lower(),
                tuple((d.domain, d.selector, d.result) for d in dkim),
                spf.domain if spf else env, "helo" if spf and spf.identity == "helo" else "mfrom",
                spf.result if spf else "none", disposition, dmarc.dkim_aligned, dmarc.spf_aligned, policy,
                "trusted_forwarder" if out.reason.startswith("dmarc=fail not acted on: ARC") else ""))
        except Exception:
            log.exception("recording the DMARC evaluation failed")

    async def _milters(self, txn: Transaction, client: Client, mail_from: str, out: Outcome) -> None:
        """Rule 6."""
        cfg = self._config()
        info = MessageInfo(txn.queue_id or "", cfg.hostname, client.ip, client.port, f"[{client.ip}]",
                           client.helo, mail_from, tuple(str(r.address) for r in txn.envelope.recipients))
        for endpoint in cfg.inbound.milters:
            header = _head(txn)
            result = await run_milter(endpoint, cfg.inbound, info, header, _body(txn))
            if result.verdict in ("reject", "tempfail"):
                out.refuse = result.reply
                out.reason = f"milter {result.name}: {result.verdict}"
                out.fields["milter"] = result.verdict
                return
            if result.verdict == "discard":
                out.discard = True
                out.reason = f"milter {result.name}: discard"
                out.fields["milter"] = "discard"
                return
            if result.edits:
                fields = apply_edits(split_fields(header), result.edits)
                txn.replace_header(b"".join(fields))
            if result.body is not None:
                txn.replace_message(_head(txn) + b"\r\n" + result.body)
            if result.quarantine is not None or spam_marked(result.edits):
                out.junk = True
                out.fields["milter"] = "spam"
                out.reason = out.reason or f"milter {result.name}: {result.quarantine or 'spam header'}"
            if result.verdict == "accept":
                return  # rule 4 of inbound.milter: no later filter is asked


async def _guard(coro: Awaitable[T], default: D, what: str) -> T | D:
    """Rule 8."""
    try:
        return await coro
    except Exception:
        log.exception("%s check failed", what)
        return default


def _head(txn: Transaction) -> bytes:
    """The spooled header section (our Received: included), without the empty line."""
    want = txn.header_length
    parts: list[bytes] = []
    got = 0
    for piece in txn.spooled():
        parts.append(piece)
        got += len(piece)
        if got >= want:
            break
    return b"".join(parts)[:want]


def _body(txn: Transaction) -> Iterator[bytes]:
    """The spooled body: after the header section and its empty line."""
    start = txn.header_length
    first = True
    for piece in txn.spooled(start):
        if first:
            first = False
            if piece.startswith(b"\r\n"):
                piece = piece[2:]
            elif piece.startswith(b"\n"):
                piece = piece[1:]
        if piece:
            yield piece
