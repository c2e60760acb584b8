"""The relay transport: deliver to other domains over SMTP, routed by DNS MX (or a smarthost).

Rules:
1. The job's recipients are grouped by destination (recipient domain in A-label form; with a
   smarthost, one group for all). Each group is one SMTP transaction carrying all of its
   recipients, with per-recipient results (``relay_session`` Rule 8). Groups run concurrently.
2. Hosts are tried in route order (``relay_route``), each of a host's addresses in turn, at most
   ``max_addresses`` addresses per group and attempt (Postfix ``smtp_mx_address_limit`` = 5),
   until one host completes a transaction.
3. Result mapping: 2xx → delivered, 4xx / refused connection / timeout → deferred, 5xx → failed;
   ``host`` is ``mx.name[ip]:port`` of the host that answered (or was last tried) and the reply
   keeps the remote text. Routing failures carry the routing reply (``556 5.1.10`` null MX,
   ``550 5.1.2`` NXDOMAIN, ``554 5.4.6`` loop, ``451 4.4.3`` DNS trouble) with ``host`` the domain.
4. When every host failed before accepting anything, the last failure decides: a 5xx from the
   last host tried fails the recipients; anything else defers them. Hosts without any address
   defer, unless every host's lookup failed permanently (``554 5.4.4``).
5. Concurrency: at most ``concurrency`` transactions at once in total and
   ``destination_concurrency`` per destination (Postfix defaults: 100 processes, 20 per
   destination).
6. The agent never raises (``pigeon.delivery.base`` Rule 3): anything unexpected is
   ``451 4.3.0`` deferred, with a log line.
7. Each result is a ``RelayResult``: ``peer_dsn`` says the next hop took the DSN parameters, so
   it (not Pigeon) sends any success notice; otherwise a NOTIFY=SUCCESS recipient deserves a
   "relayed" notice (RFC 3461 §5.2.2) from us.
8. ``[delivery.tls_policy]`` (Postfix's smtp_tls_policy_maps levels) per recipient domain:
   ``encrypt`` requires STARTTLS with any certificate, ``verify`` requires a certificate that
   verifies (system CAs, or ``tls_ca_file``) and names the MX host; without it the host is
   skipped with ``451 4.7.5`` and the next MX tried; nothing is sent in the clear.
9. With an ``Outbound`` (``delivery.outbound``), each recipient gets a plan (the envelope
   sender after SRS, DKIM and ARC signing); recipients are grouped by destination *and* plan,
   and the session signs the form it sends (``relay_session`` Rule 13).

10. Transport policies (``tlspolicy.engine``), for MX routing only (not the smarthost, not
   address literals): per host, DANE first, then MTA-STS (RFC 8461 §2). ``dane``: STARTTLS
   and a chain matching the TLSA records, else ``451 4.7.5`` and the next MX; ``sts-enforce``:
   only hosts matching an ``mx:`` pattern, with STARTTLS and a certificate valid for the MX
   name (``tls_ca_file`` or the system's CAs), else ``451 4.7.5`` and the next MX — never in
   the clear (RFC 8461 §5); ``sts-testing``: the same check is tried, and on failure the
   failure is counted for TLS-RPT and the message delivered as before (§5). Every session
   under a policy is counted for TLS-RPT (RFC 8460 §4).
11. REQUIRETLS (RFC 8689 §4.1): a message whose envelope asks for it goes only to a host that
   rule 10 authenticates (DANE, or MTA-STS — a testing policy then counts as enforce) and that
   offers REQUIRETLS; a host without such a policy is skipped with ``550 5.7.30``, so that the
   message is returned when no host qualifies (RFC 8689 §5).

12. The body is the job's ``BodySource`` (``delivery.base`` Rule 1). One held in memory
   (``in_memory()``: journaled relay mail on the queue manager's fast road, ``qmgr.lane``) is
   examined (8-bit octets, the header section), signed and sent from there on the event loop,
   with no file and no thread hop; a file or a journal segment is examined in a worker thread
   and streamed.

DSN parameters (NOTIFY, ORCPT, RET, ENVID) and BODY/SMTPUTF8 come from a ``RelayJob`` (a
``DeliveryJob`` with the queue record's envelope and per-recipient parameters); a plain
``DeliveryJob`` is sent without them (BODY inferred from the content).

What can go wrong: see Rules 3-4 and 6. Idle connections are kept for the next message to the
same host (``delivery.conncache``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from collections.abc import Iterable
from dataclasses import dataclass, field

from pigeon.config import Config
from pigeon.clocks import SystemClock
from pigeon.config.model import Endpoint, TlsLevel
from pigeon.core.clock import Clock
from pigeon.core.address import Address, format_path
from pigeon.core.envelope import Envelope, Recipient
from pigeon.core.results import MailError, PermanentError, RecipientResult, Status
from pigeon.delivery import mime7bit
from pigeon.delivery.conncache import ConnectionCache
from pigeon.delivery.base import DeliveryJob
from pigeon.delivery.outbound import NO_PLAN, Outbound, Plan
from pigeon.delivery.relay_route import MxHost, RouteSettings, Router, literal_address, to_ascii
from pigeon.delivery.relay_session import (
    C451_TLS_REQUIRED,
    C550_REQUIRETLS,
    HostFailure,
    HostResult,
    SessionCache,
    OutboundMessage,
    RelayTimeouts,
    SessionSettings,
    TlsFailed,
    send_to_host,
    status_of,
)
from pigeon.delivery.tlspolicy.engine import DomainPolicy, HostRule, PolicyResolver, TransportPolicy
from pigeon.delivery.tlspolicy.reports import ReportBook
from pigeon.delivery.tlspolicy.sts import StsCache
from pigeon.delivery.tlspolicy.tlsrpt import ResultType
from pigeon.net.tls import client_context, no_verify_context
from pigeon.proto.smtp.reply import C451_LOCAL_ERROR, Reply

log = logging.getLogger(__name__)

C451_NO_ADDRESS = Reply(451, "4.4.3", "No address found for any mail exchanger")  # RFC 3463 X.4.3
C554_NO_ADDRESS = Reply(554, "5.4.4", "No mail exchanger has an address")  # RFC 3463 X.4.4
C451_NO_HOST_ANSWERED = Reply(451, "4.4.1", "No mail exchanger answered")  # RFC 3463 X.4.1

# Postfix smtp_mx_address_limit: at most 5 addresses tried per destination and attempt.
DEFAULT_MAX_ADDRESSES = 5
# Postfix default_process_limit: 100 deliveries at once.
DEFAULT_CONCURRENCY = 100
# Postfix default_destination_concurrency_limit: 20 connections to one destination.
DEFAULT_DESTINATION_CONCURRENCY = 20


@dataclass(frozen=True, slots=True)
class RelayJob(DeliveryJob):
    """A job with what the queue record knows beyond the addresses (see module docstring)."""

    envelope: Envelope | None = None  # BODY, SMTPUTF8, RET, ENVID
    params: tuple[Recipient, ...] = ()  # parallel to ``recipients``: NOTIFY, ORCPT
    originals: tuple[Address, ...] = ()  # parallel to ``recipients``: where expansion started (Rule 9)


@dataclass(frozen=True, slots=True)
class RelayResult(RecipientResult):
    peer_dsn: bool = False  # Rule 7


@dataclass(frozen=True, slots=True)
class RelaySettings:
    hostname: str
    self_addresses: frozenset[str] = frozenset()
    remote_port: int = 25  # RFC 5321 §4.5.4.2
    smarthost: tuple[str, int] | None = None
    timeouts: RelayTimeouts = field(default_factory=RelayTimeouts)
    starttls: bool = True  # opportunistic STARTTLS (certificates not verified)
    smarthost_login: tuple[str, str] | None = field(default=None, repr=False)
    smarthost_require_tls: bool = True
    smarthost_verify: bool = True
    tls_policy: tuple[tuple[str, TlsLevel], ...] = ()  # Rule 8: A-label domain → level
    ca_file: Path | None = None  # trust anchors for verified TLS (None: the system's)
    dnssec: bool = False  # [dns] dnssec: trust the resolvers' AD bit (DANE, rule 9)
    mta_sts: bool = True  # [delivery] mta_sts: look up MTA-STS policies (rule 9)
    mta_sts_port: int = 443  # [delivery] mta_sts_port: the policy host's HTTPS port (tests only)
    state_dir: Path | None = None  # <data_dir>/tlspolicy: the MTA-STS cache, the TLS-RPT counts
    max_addresses: int = DEFAULT_MAX_ADDRESSES
    concurrency: int = DEFAULT_CONCURRENCY
    destination_concurrency: int = DEFAULT_DESTINATION_CONCURRENCY

    @classmethod
    def from_config(cls, config: Config, timeouts: RelayTimeouts | None = None) -> RelaySettings:
        smarthost = None
        d = config.delivery
        login: tuple[str, str] | None = None
        if d.smarthost:
            ep = Endpoint.parse(d.smarthost, default_port=d.remote_port)
            smarthost = (ep.host, ep.port)
            if d.smarthost_user and d.smarthost_password_file:
                login = (d.smarthost_user, read_password_file(d.smarthost_password_file))
        listen = config.listen
        own = {e.host for eps in (listen.smtp, listen.submission, listen.submissions) for e in eps
               if e.is_ip and e.host not in ("0.0.0.0", "::")}
        return cls(hostname=config.hostname, self_addresses=frozenset(own),
                   remote_port=config.delivery.remote_port, smarthost=smarthost,
                   smarthost_login=login, smarthost_require_tls=d.smarthost_tls == "required",
                   smarthost_verify=d.smarthost_tls_verify,
                   tls_policy=tuple((to_ascii(dom), level) for dom, level in d.tls_policy),
                   ca_file=d.tls_ca_file, timeouts=timeouts or RelayTimeouts(),
                   dnssec=config.dns.dnssec, mta_sts=d.mta_sts, mta_sts_port=d.mta_sts_port,
                   state_dir=config.data_dir / "tlspolicy")

    def route_settings(self) -> RouteSettings:
        return RouteSettings(self.hostname, self.self_addresses, self.remote_port, self.smarthost)


def read_password_file(path: Path) -> str:
    """The first line of ``path`` (the smarthost password); ValueError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the smarthost password: {exc.strerror or exc}") from None
    if not line:
        raise ValueError(f"{path}: the smarthost password file is empty")
    return line


def destination_of(address: Address, smarthost: bool) -> str:
    if smarthost:
        return "[smarthost]"
    try:
        return to_ascii(address.domain)
    except ValueError:
        return address.domain.lower()


class RelayDelivery:
    """The ``DeliveryAgent`` for recipients in other domains."""

    def __init__(self, resolver: PolicyResolver, settings: RelaySettings, outbound: Outbound | None = None,
                 clock: Clock | None = None, report_owner: str = "") -> None:
        self.resolver = resolver
        self.settings = settings
        self.outbound = outbound  # Rule 9
        self.clock: Clock = clock or SystemClock()
        # TLS-RPT counts: one file per process (tlspolicy.reports rule 5); "" is the server's
        self.reports = ReportBook(settings.state_dir, self.clock, report_owner)
        self.transport = self._transport(settings)
        self.router = Router(resolver, settings.route_settings())
        self._global = asyncio.Semaphore(settings.concurrency)
        self._per_dest: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._tls = no_verify_context() if settings.starttls else None
        self._cache: SessionCache = ConnectionCache()  # idle connections for the next message
        self._smarthost_session = self._smarthost_settings(settings)
        self._policy, self._policy_sessions = self._policy_settings(settings)

    @property
    def reused_connections(self) -> int:
        return self._cache.reused

    async def close(self) -> None:
        """Shutdown: QUIT the idle cached connections; save the TLS-RPT counts."""
        await self._cache.close_all()
        self.reports.flush()

    def _transport(self, s: RelaySettings) -> TransportPolicy:
        sts = None
        if s.mta_sts:
            sts = StsCache(self.resolver, self.clock, client_context(verify=True, cafile=s.ca_file),
                           s.state_dir, port=s.mta_sts_port)
        self._verified = SessionSettings(s.hostname, s.timeouts, client_context(verify=True, cafile=s.ca_file),
                                         require_tls=True)
        return TransportPolicy(self.resolver, sts, self.reports, self.clock, s.dnssec)

    def reconfigure(self, settings: RelaySettings) -> None:
        """SIGHUP: new routing/timeouts for the next transactions (concurrency limits need a restart)."""
        self.settings = settings
        self.router = Router(self.resolver, settings.route_settings())
        self._tls = no_verify_context() if settings.starttls else None
        self._smarthost_session = self._smarthost_settings(settings)
        self._policy, self._policy_sessions = self._policy_settings(settings)
        self.transport = self._transport(settings)

    @staticmethod
    def _policy_settings(s: RelaySettings) -> tuple[dict[str, TlsLevel], dict[TlsLevel, SessionSettings]]:
        """Rule 8: the session settings of each TLS level, built once per configuration."""
        policy = dict(s.tls_policy)
        sessions: dict[TlsLevel, SessionSettings] = {}
        if "encrypt" in policy.values():
            sessions["encrypt"] = SessionSettings(s.hostname, s.timeouts, no_verify_context(), require_tls=True)
        if "verify" in policy.values():
            sessions["verify"] = SessionSettings(s.hostname, s.timeouts,
                                                 client_context(verify=True, cafile=s.ca_file), require_tls=True)
        return policy, sessions

    @staticmethod
    def _smarthost_settings(s: RelaySettings) -> SessionSettings | None:
        """Built once per configuration: loading the CA bundle costs ~25 ms, and equal settings
        are what lets the connection cache reuse a connection."""
        if s.smarthost is None:
            return None
        ctx = client_context(verify=s.smarthost_verify, cafile=s.ca_file if s.smarthost_verify else None)
        return SessionSettings(s.hostname, s.timeouts, ctx, require_tls=s.smarthost_require_tls,
                               login=s.smarthost_login)

    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        try:
            return await self._deliver(job)
        except Exception:
            log.exception("%s: relay: unexpected error; deferring", job.queue_id)
            return [RelayResult(r, "deferred", C451_LOCAL_ERROR, "") for r in job.recipients]

    async def _deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        params: tuple[Recipient, ...] = ()
        env: Envelope | None = None
        originals: tuple[Address, ...] = ()
        if isinstance(job, RelayJob):
            env = job.envelope
            if len(job.params) == len(job.recipients):
                params = job.params
            if len(job.originals) == len(job.recipients):
                originals = job.originals
        if not params:
            params = tuple(Recipient(r) for r in job.recipients)
        smtputf8 = env.smtputf8 if env is not None else False
        utf8_local = any(not p.address.local.isascii() for p in params) or (
            job.sender is not None and not job.sender.local.isascii())
        data = job.body.in_memory()
        if data is not None:  # Rule 12: no file, no thread hop
            size = len(data)
            eight_bit = not data.isascii()
            needs_utf8 = utf8_local or (smtputf8 and mime7bit.header_bytes_have_8bit(data))
        else:
            size = job.body.size
            eight_bit = await asyncio.to_thread(mime7bit.has_8bit, job.body)
            needs_utf8 = utf8_local or (smtputf8 and await asyncio.to_thread(
                mime7bit.header_section_has_8bit, job.body))
        groups: dict[tuple[str, Plan], list[int]] = {}
        outbound = self.outbound
        for i, p in enumerate(params):
            plan = NO_PLAN if outbound is None else outbound.plan(
                env, job.sender, originals[i] if originals else None, p.address)
            if outbound is not None and plan.sender != job.sender:
                log.info("%s: to=%s srs: sender <%s> rewritten to <%s>", job.queue_id,
                         format_path(p.address), job.sender, plan.sender)
            dest = destination_of(p.address, self.settings.smarthost is not None)
            groups.setdefault((dest, plan), []).append(i)
        results: list[RecipientResult | None] = [None] * len(params)

        async def run(key: tuple[str, Plan], idx: list[int]) -> None:
            dest, plan = key
            msg = OutboundMessage(
                sender=plan.sender if outbound is not None else job.sender,
                recipients=tuple(params[i] for i in idx), body=job.body,
                size=size, eight_bit=eight_bit, binarymime=env is not None and env.body == "BINARYMIME",
                needs_smtputf8=needs_utf8, smtputf8=smtputf8 or utf8_local,
                ret=env.ret if env else None, envid=env.envid if env else None,
                sign=outbound.signer(plan) if outbound is not None else None,
                requiretls=env.requiretls if env else False)
            try:
                out = await self._deliver_group(job, dest, msg)
            except Exception:
                log.exception("%s: relay to %s: unexpected error; deferring", job.queue_id, dest)
                out = [RelayResult(params[i].address, "deferred", C451_LOCAL_ERROR, dest) for i in idx]
            for i, res in zip(idx, out, strict=True):
                results[i] = res

        await asyncio.gather(*(run(key, idx) for key, idx in groups.items()))
        return [r if r is not None else RelayResult(job.recipients[i], "deferred", C451_LOCAL_ERROR, "")
                for i, r in enumerate(results)]

    def _dest_semaphore(self, dest: str) -> asyncio.Semaphore:
        sem, users = self._per_dest.get(dest, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.settings.destination_concurrency)
        self._per_dest[dest] = (sem, users + 1)
        return sem

    def _release_dest(self, dest: str) -> None:
        sem, users = self._per_dest[dest]
        if users <= 1:
            del self._per_dest[dest]  # no unbounded growth over many destinations
        else:
            self._per_dest[dest] = (sem, users - 1)

    async def _deliver_group(self, job: DeliveryJob, dest: str, msg: OutboundMessage) -> list[RelayResult]:
        qid = job.queue_id
        rcpts = [r.address for r in msg.recipients]
        domain = msg.recipients[0].address.domain
        try:
            hosts = await self.router.route(domain)
        except MailError as exc:
            status: Status = "failed" if isinstance(exc, PermanentError) else "deferred"
            log.info("%s: relay: %s: %s (%s)", qid, domain, status, exc.reply)
            return [RelayResult(a, status, exc.reply, dest) for a in rcpts]
        dp: DomainPolicy | None = None
        if self.settings.smarthost is None and literal_address(domain) is None:
            dp = await self.transport.for_domain(to_ascii(domain))  # rule 9 (never raises)
        elif msg.requiretls:  # rule 10: no policy can authenticate a smarthost or a literal
            reply = C550_REQUIRETLS.with_text("REQUIRETLS: no DANE or MTA-STS policy for this route")
            return [RelayResult(a, "failed", reply, dest) for a in rcpts]
        sem = self._dest_semaphore(dest)
        try:
            async with sem, self._global:  # per destination first: never hold a global slot idle
                return await self._try_hosts(job, hosts, msg, rcpts, self._policy.get(dest, "may"), dp)
        finally:
            self._release_dest(dest)

    async def _try_hosts(self, job: DeliveryJob, hosts: list[MxHost], msg: OutboundMessage,
                         rcpts: list[Address], level: TlsLevel = "may",
                         dp: DomainPolicy | None = None) -> list[RelayResult]:
        qid = job.queue_id
        last: tuple[Reply, str] | None = None
        tried = 0
        for host in hosts:
            if not host.addresses:
                log.info("%s: relay: %s has no usable address: %s", qid, host.name, host.error)
                continue
            rule = await self.transport.for_host(dp, host.name) if dp is not None else HostRule("none")
            refusal = self._refusal(qid, dp, rule, host, msg)
            if refusal is not None:
                last = (refusal, host.name)
                continue
            for address in host.addresses:
                if tried >= self.settings.max_addresses:
                    break
                tried += 1
                label = host.label(address)
                try:
                    res = await self._send_under(dp, rule, host, address, msg, level)
                except HostFailure as exc:
                    log.info("%s: relay: %s: %s", qid, label, exc.reply)
                    if dp is not None and exc.tls_result is not None:
                        self.transport.report(dp, rule, False, _result_type(exc.tls_result), address, host.name)
                    if not exc.try_next:  # relay_session Rule 9: it may have the message
                        return [RelayResult(a, "deferred", exc.reply, label) for a in rcpts]
                    last = (exc.reply, label)
                    continue
                if dp is not None and rule.kind != "sts-testing":  # testing: counted in _send_under
                    self.transport.report(dp, rule, True, None, address, host.name)
                out = [RelayResult(a, status, reply, label, peer_dsn=res.peer_dsn)
                       for a, (status, reply) in zip(rcpts, res.outcomes, strict=True)]
                for r in out:
                    log.info("%s: to=%s relay=%s tls=%s status=%s (%s)", qid, format_path(r.recipient),
                             label, "yes" if res.tls else "no", r.status, r.reply)
                return out
        return self._exhausted(hosts, rcpts, last)

    def _exhausted(self, hosts: Iterable[MxHost], rcpts: list[Address],
                   last: tuple[Reply, str] | None) -> list[RelayResult]:
        """Rule 4: nothing accepted the message."""
        if last is not None:
            reply, label = last
            status: Status = "failed" if reply.is_permanent else "deferred"
            return [RelayResult(a, status, reply, label) for a in rcpts]
        hosts = list(hosts)
        names = ", ".join(h.name for h in hosts)
        if hosts and not any(h.error_temporary for h in hosts):
            reply = C554_NO_ADDRESS.with_text(f"No address for any mail exchanger ({names})")
            return [RelayResult(a, "failed", reply, names) for a in rcpts]
        reply = C451_NO_ADDRESS.with_text(f"No address found for the mail exchangers ({names})")
        return [RelayResult(a, "deferred", reply, names) for a in rcpts]

    def _refusal(self, qid: str, dp: DomainPolicy | None, rule: HostRule, host: MxHost,
                 msg: OutboundMessage) -> Reply | None:
        """Rules 9-10: why ``host`` must not be tried at all, or None."""
        if rule.kind == "dane-error":
            log.warning("%s: relay: %s: %s; not used (RFC 7672 §2.2)", qid, host.name, rule.reason)
            if dp is not None:
                self.transport.report(dp, rule, False, "dnssec-invalid", "", host.name)
            return C451_TLS_REQUIRED.with_text(f"{host.name}: DANE: {rule.reason}")
        if rule.kind in ("sts-enforce", "sts-testing") and not rule.permitted and dp is not None:
            log.warning("%s: relay: %s: MX host not in the MTA-STS policy of %s (mode %s)", qid, host.name,
                        dp.domain, rule.kind[4:])
            self.transport.report(dp, rule, False, "validation-failure", "", host.name)
            if rule.kind == "sts-enforce" or msg.requiretls:
                return C451_TLS_REQUIRED.with_text(
                    f"{host.name} is not an MX host of the MTA-STS policy of {dp.domain} (RFC 8461 §4.1)")
        if msg.requiretls and not rule.authenticated:
            log.info("%s: relay: %s: REQUIRETLS message, and no DANE or MTA-STS policy authenticates it",
                     qid, host.name)
            return C550_REQUIRETLS.with_text(
                f"{host.name}: REQUIRETLS: not authenticated by DANE or MTA-STS (RFC 8689 §4.1)")
        return None

    async def _send_under(self, dp: DomainPolicy | None, rule: HostRule, host: MxHost, address: str,
                          msg: OutboundMessage, level: TlsLevel) -> HostResult:
        """Rule 10: one attempt under the host's policy."""
        s = self.settings
        label = host.label(address)
        if rule.kind == "dane":
            settings = SessionSettings(s.hostname, s.timeouts, no_verify_context(), require_tls=True,
                                       peer_check=self.transport.dane_check(rule, host.name))
            return await self._required(settings, host, address, msg, "DANE")
        if rule.kind == "dane-encrypt":
            settings = SessionSettings(s.hostname, s.timeouts, no_verify_context(), require_tls=True)
            return await self._required(settings, host, address, msg, "DANE (no usable TLSA: encrypt)")
        if rule.kind == "sts-enforce" or (rule.kind == "sts-testing" and msg.requiretls):
            return await self._required(self._verified, host, address, msg, "MTA-STS")
        if rule.kind == "sts-testing" and rule.permitted and dp is not None:
            try:
                res = await self._required(self._verified, host, address, msg, "MTA-STS testing")
            except HostFailure as exc:
                if exc.tls_result is None or not exc.try_next:
                    raise
                log.warning("relay: %s: MTA-STS (testing) would fail: %s; delivering as before", label, exc.reply)
                self.transport.report(dp, rule, False, _result_type(exc.tls_result), address, host.name)
                return await self._send(host, address, msg, level)
            self.transport.report(dp, rule, True, None, address, host.name)
            return res
        return await self._send(host, address, msg, level)

    async def _required(self, settings: SessionSettings, host: MxHost, address: str, msg: OutboundMessage,
                        what: str) -> HostResult:
        """STARTTLS required, and verified as ``settings`` says; nothing in the clear."""
        try:
            return await send_to_host(host, address, msg, settings, use_tls=True, cache=self._cache)
        except TlsFailed as exc:
            raise HostFailure(C451_TLS_REQUIRED.with_text(f"{host.label(address)}: TLS ({what}) failed: {exc}"),
                              try_next=True, tls_result=_tls_failure_type(str(exc))) from None

    async def _send(self, host: MxHost, address: str, msg: OutboundMessage, level: TlsLevel = "may") -> HostResult:
        s = self.settings
        required = self._policy_sessions.get(level) if self._smarthost_session is None else None
        if required is not None:  # Rule 8: TLS required for this domain; nothing in the clear
            try:
                return await send_to_host(host, address, msg, required, use_tls=True, cache=self._cache)
            except TlsFailed as exc:
                raise HostFailure(C451_TLS_REQUIRED.with_text(
                    f"{host.label(address)}: TLS ({level}) failed: {exc}"), try_next=True) from None
        if self._smarthost_session is not None:
            # The smarthost: TLS required (unless configured otherwise) and, with credentials, AUTH.
            settings = self._smarthost_session
            try:
                return await send_to_host(host, address, msg, settings, use_tls=True, cache=self._cache)
            except TlsFailed as exc:
                if s.smarthost_require_tls:
                    raise HostFailure(C451_TLS_REQUIRED.with_text(
                        f"{host.label(address)}: TLS handshake failed: {exc}"), try_next=False) from None
                return await send_to_host(host, address, msg, settings, use_tls=False)
        settings = SessionSettings(s.hostname, s.timeouts, self._tls)
        try:
            return await send_to_host(host, address, msg, settings, use_tls=self._tls is not None,
                                      cache=self._cache)
        except TlsFailed:
            # Opportunistic TLS only: a failed handshake is retried in plaintext (relay_session Rule 2).
            return await send_to_host(host, address, msg, settings, use_tls=False)


def _tls_failure_type(text: str) -> str:
    """The RFC 8460 §4.3 result type of a failed handshake, from OpenSSL's words."""
    low = text.lower()
    if "expired" in low:
        return "certificate-expired"
    if "mismatch" in low or "doesn't match" in low:
        return "certificate-host-mismatch"
    if "certificate" in low:
        return "certificate-not-trusted"
    return "validation-failure"


_RESULT_TYPES: dict[str, ResultType] = {t: t for t in (
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
    "dnssec-invalid", "tlsa-invalid", "dane-required")}


def _result_type(text: str) -> ResultType:
    return _RESULT_TYPES.get(text, "validation-failure")


__all__ = ["RelayDelivery", "RelayJob", "RelayResult", "RelaySettings", "RelayTimeouts", "status_of"]
