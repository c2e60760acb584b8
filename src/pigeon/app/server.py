"""The server's composition root: configuration → objects → tasks (``pigeon serve``).

Start-up order (docs/architecture.md):
0. Check what the configuration names (``app.preflight``): a bad setting refuses to start.
   Started as root with ``user`` set: bind every listener, give the data directory to the
   user, drop to it (``app.privileges``); as root without ``user``: a warning.
1. Take the data directory lock (one server per data directory).
2. Open the directory (users, domains, aliases); on the embedded default, create the demo user
   on first start and print its password once.
3. Recover the queue (``QueueStore.recover``) and schedule what it holds — before any listener
   opens, so nothing new is accepted on top of an unrecovered queue.
4. Start the queue manager, the daily report timer (``app.reports``), the control socket,
   then the listeners.
5. Start the worker processes the configuration asks for (``worker_pools``, ``app.master``),
   handing them the listeners' sockets; their messages go to ``app.hub``.
Stop (SIGTERM/SIGINT): close the listeners, stop the workers (they finish their sessions; their
journals are taken over), let sessions finish their command (idle ones get ``421 4.3.2``), let
deliveries under way finish for a grace period, then exit. Nothing accepted is lost: every
``250`` was given after the commit point. SIGHUP reloads the configuration (limits, domains,
queue schedule, TLS certificates) here and in every ready worker; listener changes need a
restart and say so in the log. ``pigeon queue flush`` reaches the workers' held mail (SIGUSR1). SIGHUP and SIGUSR1 reopen
``log_file`` (logrotate). Under systemd (``Type=notify``) the server says READY=1 once it
serves, RELOADING=1 … READY=1 around a reload and STOPPING=1 when it stops (``app.sdnotify``).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pigeon import maillog
from pigeon.app import ipc, preflight, sdnotify
from pigeon.app.hub import ChangeRelay, ServerHub, local_wake
from pigeon.app.master import Master, Pool, WorkerSpec, plan
from pigeon.app.reports import ServerReports
from pigeon.app.privileges import PrivilegeError, bind_all, check_tree, drop, is_root, prepare_data_dir, resolve
from pigeon.app.runtime import freeze_startup, reopen_logs, setup_logging, tune_allocator, tune_gc
from pigeon.app.services import (IMAP_SERVICES, POP3_SERVICES, SMTP_SERVICES, MailParts, SmtpParts,
                                 credential_verifier, expander, imap_listener, inbound_verdicts, load_boards,
                                 pop3_listener, pop3_lock_dir, smtp_listener, srs_codec)
from pigeon.app.worker import worker_command
from pigeon.auth.passwords import generate_password
from pigeon.bounce.dsn import Bouncer
from pigeon.cleanup.intake import Intake
from pigeon.clocks import SystemClock
from pigeon.config import Config, ConfigError, load_config
from pigeon.control import queueops
from pigeon.control.protocol import JSONValue
from pigeon.control.server import ControlServer
from pigeon.control.client import socket_path
from pigeon.core.address import parse_address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.delivery.fastlane import FastLocalDelivery
from pigeon.delivery.local import LocalDelivery
from pigeon.delivery.outbound import Outbound
from pigeon.delivery.relay import RelayDelivery, RelaySettings
from pigeon.dns.resolver import DnsResolver
from pigeon.directory import Directory
from pigeon.mailauth.keys import KeyStore
from pigeon.directory.directory import SERVER_RECHECK
from pigeon.net.fdlimit import check_budget, raise_nofile_limit
from pigeon.net.listener import ConnectionGate, Limits, Listener, adopt_listening_sockets, quiet_accept_errors
from pigeon.net.loadboard import LoadBoard
from pigeon.qmgr.manager import QueueManager
from pigeon.reports.schedule import ReportTimer
from pigeon.queue.store import FileQueueStore
from pigeon.queue.record import QueueRecord
from pigeon.store.maildir import MaildirStore
from pigeon.store.changes import ChangeBus
from pigeon.store.mailbox import MailStore
from pigeon.pop3d import MaildropLocks
from pigeon.auth.sasl import Authenticator
from pigeon.auth.throttle import AuthThrottle
from pigeon.net.tls import TlsError, TlsManager
from pigeon.app.web import WebEndpoint, tls_files
from pigeon.web.metrics import MailCounters
from pigeon.smtpd.policy import SenderPolicy
from pigeon.submission.ratelimit import SendingLimits, SendingRateLimiter
from pigeon.submission.spool import make_submit_handler

log = logging.getLogger("pigeon")

DEMO_USER = "demo@example.test"
# Every [listen] service; bound before the privilege drop (start-up step 0).
ALL_SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s")
# One thread per concurrent delivery attempt: the queue manager's default concurrency (32);
# fsyncs issued together are batched by the file system, so fewer would serialise them.
DELIVERY_IO_THREADS = 32
# 5 s of 0.1 s tries for the data directory lock: an offline `sendmail` holds it for milliseconds.
LOCK_ATTEMPTS = 50


def worker_pools(cfg: Config) -> list[Pool]:
    """The services that also run in worker processes, and how many processes (the server
    included) each pool asks for (``app.master``)."""
    return [Pool("smtp", ("smtp",), cfg.smtp.processes), Pool("imap", IMAP_SERVICES, cfg.imap.processes),
            Pool("pop3", POP3_SERVICES, cfg.pop3.processes)]


class DataDirLocked(Exception):
    """Another server already runs on this data directory."""


class CannotStart(Exception):
    """A setting that cannot work (configured TLS files, the postmaster): refuse to start."""


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.clock = SystemClock()
        self.stopping = asyncio.Event()
        self.master: Master | None = None  # the worker processes, when the configuration asks for some
        self.hub: ServerHub | None = None
        self.listeners: list[Listener] = []
        self.gate = ConnectionGate()  # one count over every service of this process
        self.boards: dict[str, LoadBoard] = {}  # IMAP/POP3 pools' load boards (services rule 6)
        self._lock_fd: int | None = None
        # Listening sockets bound before the privilege drop, by service (taken by the listeners).
        self._bound: dict[str, list[int]] = {}
        self.counters = MailCounters()  # this process's metrics (pigeon.web.metrics)
        self.web: WebEndpoint | None = None
        self.reports: ServerReports | None = None  # the daily TLS-RPT/DMARC reports (app.reports)
        self._report_task: asyncio.Task[None] | None = None

    def current_config(self) -> Config:
        return self.config

    def _become_service_user(self) -> None:
        """Start-up step 0: bind as root, then become ``user`` (``app.privileges``)."""
        cfg = self.config
        if not is_root():
            if cfg.user is not None:
                target = resolve(cfg.user, cfg.group, cfg.source)
                if os.geteuid() != target.uid:
                    raise PrivilegeError(f"{cfg.source}: user = {cfg.user!r}, but started as uid {os.geteuid()}: "
                                         f"start pigeon as root (it drops to {cfg.user}) or as {cfg.user}")
            return
        if cfg.user is None:
            log.warning("running as root: set user in %s (e.g. user = \"pigeon\") so that the server "
                        "serves as an unprivileged user once its ports are bound", cfg.source)
            return
        target = resolve(cfg.user, cfg.group, cfg.source)
        endpoints = {service: [(e.host, e.port) for e in getattr(cfg.listen, service)]
                     for service in ALL_SERVICES}
        self._bound = bind_all({k: v for k, v in endpoints.items() if v})
        prepare_data_dir(cfg, target)
        check_tree(cfg.data_dir, target)
        drop(target)
        log.info("privileges dropped user=%s uid=%d gid=%d groups=%s", target.name, target.uid, target.gid,
                 ",".join(str(g) for g in target.groups))

    def _take_bound(self, service: str) -> list[int]:
        return self._bound.pop(service, [])

    def _close_unused_bound(self) -> None:
        for fds in self._bound.values():
            for fd in fds:
                os.close(fd)
        self._bound = {}

    def _lock(self) -> None:
        data = self.config.data_dir
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(data / "pigeon.lock", os.O_RDWR | os.O_CREAT, 0o600)
        # `pigeon sendmail` with the server stopped holds this lock for the moment it takes to
        # queue one message: wait that out instead of refusing to start.
        for attempt in range(LOCK_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if attempt == LOCK_ATTEMPTS - 1:
                    os.close(fd)
                    raise DataDirLocked(f"another pigeon server is running on {data}") from exc
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _build(self) -> None:
        cfg = self.config
        data = cfg.data_dir
        self.directory = Directory(data / "directory.sqlite3", cfg.domains, cfg.postmaster,
                                   cfg.smtp.recipient_delimiter, recheck_after=SERVER_RECHECK)
        if cfg.source == "<embedded default>" and not self.directory.users():
            password = generate_password()
            self.directory.add_user(DEMO_USER, password)
            print(f"pigeon: created user {DEMO_USER} with password {password} "
                  "(shown only this once; change it with `pigeon user passwd`)", file=sys.stderr, flush=True)
        # The journal is for local mail and for relay mail (queue.store rule 8): the queue is told
        # which domains are local; the fast road (qmgr.lane) relays the relay mail it holds.
        self.queue = FileQueueStore(data / "queue", self.clock, journal=True, flush=cfg.queue.flush,
                                    local_domain=self.directory.is_local_domain, relay_journal=True)
        report = self.queue.recover()
        log.info("queue recovered: %s", report)
        self.store = MaildirStore(data / "mail", cfg.hostname, commits=self.queue.commits)  # one engine
        # The mailboxes as IMAP and POP3 see them (the same Maildirs, plus the per-account index).
        self.changes = ChangeBus()  # local delivery → IMAP IDLE, at once
        self.mailstore = MailStore(data / "mail", cfg.hostname, self.clock,
                                   max_append=cfg.limits.max_message_size, changes=self.changes)
        # Issue 17: DKIM keys for every local domain, the SRS secret (app.services rule 4).
        self.dkim_keys = KeyStore(data / "dkim")
        self._ensure_keys(cfg)
        self.srs = srs_codec(data)
        self.intake = Intake(self.queue, expander(self.directory, self.srs, self.clock), cfg.hostname, self.clock,
                             max_received=cfg.limits.max_received_headers)
        self.bouncer = Bouncer(self.intake, self.queue, cfg.hostname,
                               self.directory.postmaster_address, self.clock,
                               notify_postmaster=cfg.queue.notify_postmaster,
                               max_lifetime=cfg.queue.max_lifetime)
        self.local = LocalDelivery(self.store, self.directory, cfg.hostname, self.changes)
        self.resolver = DnsResolver([(e.host, e.port) for e in cfg.dns.nameservers], self.clock)
        outbound = Outbound(self.dkim_keys, self.srs, self.directory.is_local_domain,
                            lambda: self.config.relay_domains, cfg.hostname, self.clock)
        self.relay = RelayDelivery(self.resolver, RelaySettings.from_config(cfg), outbound, self.clock)
        # Mail committed to the intake journal (small local mail, and relay mail) takes qmgr's fast
        # road: the fast agent delivers local mail from memory, the relay agent relays from memory
        # (qmgr rule 7, docs/queue.md).
        fast = FastLocalDelivery(self.store, self.directory, self.queue.commits, self.changes)
        self.qmgr = QueueManager(self.queue, self.local, self.relay, self.directory,
                                 self.current_config, self.clock, self.bouncer, fast=fast)
        self.bouncer.on_queued = self.on_queued
        self.queue.orphans = self.on_queued  # committed after its client went away
        self.control = ControlServer(socket_path(data))
        self._register_control()
        self.tls: TlsManager | None = None
        try:
            self.tls = TlsManager(tls_files(cfg))  # [tls], else ACME's, else self-signed (app.web)
        except TlsError as exc:
            if cfg.tls.cert is not None:  # configured files that do not work: refuse (app.preflight rule 2)
                raise CannotStart(f"{cfg.source}: [tls] cert/key: {exc}") from None
            log.error("TLS unavailable (no STARTTLS, no implicit-TLS listeners): %s", exc)
        problem = preflight.postmaster_problem(cfg, self.directory)
        if problem is not None:
            raise CannotStart(problem)
        self.authenticator = Authenticator(credential_verifier(self.directory, cfg.auth, self.clock), AuthThrottle(cfg.auth.throttle, self.clock), self.clock)
        self.authenticator.on_failure = self.counters.auth_failure
        limits = SendingLimits(cfg.submission.messages_per_hour, cfg.submission.recipients_per_message)
        self.senders = SenderPolicy(self.directory, SendingRateLimiter(limits, self.clock),
                                    lambda: self.config.smtp.recipient_delimiter)
        self.verdicts = inbound_verdicts(self.current_config, self.resolver, self.directory, "main", self.clock)

    def _ensure_keys(self, cfg: Config) -> None:
        """Every local domain has its DKIM pair (mailauth.keys rule 1); a failure is logged."""
        for domain in self.directory.domains():
            try:
                self.dkim_keys.ensure(domain, self.clock.now())
            except (OSError, ValueError) as exc:
                log.error("dkim: no keys for %s (its mail goes out unsigned): %s", domain, exc)

    def on_queued(self, record: QueueRecord) -> None:
        """Every message committed to the queue (SMTP, sendmail, bounces) passes here."""
        maillog.queued(record.id, record.envelope.sender, record.size, len(record.envelope.recipients))
        self.qmgr.submit(record)

    def _limits(self) -> Limits:
        return self.config.limits

    def _register_control(self) -> None:
        c = self.control
        q = self.queue

        async def ping(args: dict[str, JSONValue]) -> JSONValue:
            return {"pid": os.getpid(), "config": self.config.source}

        lane = self.qmgr.lane
        assert lane is not None  # the server always has its fast road (qmgr rule 7)

        async def qlist(args: dict[str, JSONValue]) -> JSONValue:
            held = lane.held()
            # In a thread: it reads the journals' segments (up to 16 MiB each).
            return await asyncio.to_thread(queueops.list_queue, q, self.clock.now(), held)

        async def qshow(args: dict[str, JSONValue]) -> JSONValue:
            # In a thread: a message in a journal is read from its segments.
            return await asyncio.to_thread(queueops.show, q, args.get("id"), self.clock.now(), lane.held())

        async def qdelete(args: dict[str, JSONValue]) -> JSONValue:
            qid = await queueops.delete_running(q, lane, args.get("id"))
            self.qmgr.forget(qid)
            maillog.admin(qid, "delete")
            return qid

        async def qhold(args: dict[str, JSONValue]) -> JSONValue:
            qid = await queueops.hold_running(q, lane, args.get("id"))
            self.qmgr.forget(qid)
            maillog.admin(qid, "hold")
            return qid

        async def qrelease(args: dict[str, JSONValue]) -> JSONValue:
            qid = queueops.release(q, args.get("id"))
            self.qmgr.submit(q.load(qid))
            maillog.admin(qid, "release")
            return qid

        async def qflush(args: dict[str, JSONValue]) -> JSONValue:
            if self.master is not None:
                self.master.flush()  # their fast lanes' held messages (app.master rule 6)
            return self.qmgr.flush()

        async def qbounce(args: dict[str, JSONValue]) -> JSONValue:
            qid = queueops.existing_id(q, args.get("id"))
            n = await self.qmgr.bounce_now(qid)
            maillog.admin(qid, "bounce")
            return {"id": qid, "failed": n}

        async def reload(args: dict[str, JSONValue]) -> JSONValue:
            return self.reload()

        c.register("sendmail.submit", make_submit_handler(self.intake, self.config.data_dir, self.on_queued))
        for name, h in [("ping", ping), ("queue.list", qlist), ("queue.show", qshow),
                        ("queue.delete", qdelete), ("queue.hold", qhold),
                        ("queue.release", qrelease), ("queue.flush", qflush), ("queue.bounce", qbounce), ("reload", reload)]:
            c.register(name, h)

    def reload(self) -> str:
        """SIGHUP: read the configuration again; keep the old one if the new one is invalid."""
        sdnotify.reloading()
        reopen_logs()
        try:
            return self._reload()
        finally:
            sdnotify.ready("reloaded")

    def reopen(self) -> None:
        """SIGUSR1 (logrotate's postrotate): reopen the log file here and in every worker."""
        reopen_logs()
        if self.master is not None:
            self.master.flush()  # a worker's SIGUSR1 reopens its log too (and tries its held mail)
        log.info("log reopened")

    def _reload(self) -> str:
        if self.config.source.startswith("<"):
            log.info("reload: embedded default configuration, nothing to reload")
            return "unchanged"
        try:
            new = load_config(Path(self.config.source))
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return f"refused: {exc}"
        if new.listen != self.config.listen or new.data_dir != self.config.data_dir:
            log.warning("reload: listener or data_dir changes need a restart; other settings applied")
        self.config = new
        self.directory.set_config_domains(new.domains, new.postmaster)
        self._ensure_keys(new)
        self.bouncer.notify_postmaster = new.queue.notify_postmaster
        self.bouncer.max_lifetime = new.queue.max_lifetime
        try:
            self.relay.reconfigure(RelaySettings.from_config(new))
        except ValueError as exc:
            log.error("reload: delivery settings: %s; keeping the previous ones", exc)
        if self.tls is not None:  # renewed certificates for new connections, without a restart
            try:
                self.tls.reload(tls_files(new))
            except TlsError as exc:
                log.error("reload: TLS files: %s; keeping the current certificate", exc)
        if self.master is not None:
            self.master.reload()
        log.info("configuration reloaded from %s", new.source)
        return "reloaded"

    async def start(self) -> None:
        # The open-file budget first: a connection limit that cannot fit refuses to start.
        check_budget(self.config.limits.max_connections, raise_nofile_limit())
        quiet_accept_errors(asyncio.get_running_loop())
        self._become_service_user()  # binds first when it drops privileges (step 0)
        self._lock()
        # Local delivery's file work (copy, fsync, link, shared new/ fsync) runs on the loop's
        # default executor; its default size (min(32, cpus + 4) = 6 here) would cap concurrent
        # deliveries (and so the fsyncs the disk can batch) far below the queue manager's.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(DELIVERY_IO_THREADS, thread_name_prefix="pigeon-delivery-io"))
        self._build()
        n = self.qmgr.schedule_existing()
        if n:
            log.info("queue: %d messages scheduled after recovery", n)
        self.qmgr.start()
        self._start_reports()
        await self.control.start()
        await self._start_smtp_listeners()
        await self._start_mail_listeners()
        self._close_unused_bound()  # a service that did not start (no TLS): its sockets
        await self._start_workers()
        for lst in self.listeners:
            lst.on_tls = self.counters.tls_handshake
        self.web = WebEndpoint(self)
        await self.web.start()
        log.info("pigeon started hostname=%s data_dir=%s config=%s", self.config.hostname,
                 self.config.data_dir, self.config.source)
        freeze_startup()  # runtime rule 5

    def _start_reports(self) -> None:
        """Start-up step 4: the due reports go out once a day (app.reports, reports.schedule)."""
        self.reports = ServerReports(self.current_config, self.clock, self.resolver, self.intake, self.on_queued,
                                     self.relay.reports)
        if self.config.reports.send:
            timer = ReportTimer(self.clock, self.reports.send_due, random.SystemRandom().random,
                                self.config.reports.interval)
            self._report_task = asyncio.get_running_loop().create_task(timer.run())

    async def _start_smtp_listeners(self) -> None:
        cfg = self.config
        parts = SmtpParts(self.current_config, self.directory, self.intake, self.on_queued, self.tls,
                          self.authenticator, self.senders, self.gate, srs=self.srs, verdicts=self.verdicts)
        for service in SMTP_SERVICES:
            if not getattr(cfg.listen, service):
                continue
            lst = smtp_listener(service, parts, self._take_bound(service))
            if lst is None:
                continue
            await lst.start()
            self.listeners.append(lst)

    async def _start_workers(self) -> None:
        """More cores: worker processes on the server's own listening sockets (app.master), one
        queue of new connections taken by whichever process is free."""
        sockets: dict[str, list[int]] = {}
        for lst in self.listeners:
            sockets.setdefault(lst.service, []).extend(lst.listening_fds())
        boards = {name: (b.fd, b.slots) for name, b in self.boards.items()}
        specs = plan(worker_pools(self.config), sockets, boards)
        if not specs:
            return
        source = None if self.config.source.startswith("<") else self.config.source
        # Change notices between processes (docs/architecture.md): the server's own go to every
        # IMAP worker, a worker's to the server's sessions and the other IMAP workers.
        relay = ChangeRelay(asyncio.get_running_loop(), self._send_to_workers)
        self.hub = ServerHub(self.queue, self.qmgr.submit, self.qmgr.complete, local_wake(self.changes), relay)
        self.hub.counters = lambda name, pid, values: (
            self.web.exporter.worker_snapshot(name, pid, values) if self.web is not None else None)
        self.hub.on_ended = lambda spec: (  # net.loadboard rule 3
            self.boards[spec.pool].release(spec.index) if spec.pool in self.boards else None)
        self.master = Master(specs, worker_command(source), self.hub)
        self.changes.forward = relay
        await self.master.start()

    def _send_to_workers(self, msg: ipc.MasterMessage, to: Callable[[WorkerSpec], bool]) -> int:
        return self.master.send(msg, to) if self.master is not None else 0

    async def _start_mail_listeners(self) -> None:
        """IMAP and POP3 (``app.services`` rule 6); workers serve them too (``worker_pools``)."""
        cfg = self.config
        self.boards = load_boards([(p.name, p.processes) for p in worker_pools(cfg)])
        parts = MailParts(self.current_config, self.mailstore, self.authenticator, self.tls,
                          MaildropLocks(pop3_lock_dir(cfg)), self.gate, boards=self.boards)
        for services, build in ((POP3_SERVICES, pop3_listener), (IMAP_SERVICES, imap_listener)):
            for service in services:
                if not getattr(cfg.listen, service):
                    continue
                lst = build(service, parts, self._take_bound(service))
                if lst is None:
                    continue
                await lst.start()
                self.listeners.append(lst)

    async def stop(self) -> None:
        sdnotify.stopping()
        log.info("stopping")
        if self.web is not None:
            await self.web.stop()
        for lst in self.listeners:
            await lst.stop()
        self.verdicts.close()  # the DMARC evaluations gathered (inbound.reports rule 1)
        if self.master is not None:
            await self.master.stop()
        if self.hub is not None:
            await self.hub.close()
        if self._report_task is not None:
            self._report_task.cancel()
            await asyncio.gather(self._report_task, return_exceptions=True)
        await self.qmgr.stop()
        await self.relay.close()  # QUIT the idle cached SMTP client connections
        await self.control.stop()
        self.queue.close()
        self.mailstore.close()
        self.directory.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("stopped")

    def _handle_signals(self) -> None:
        """Before anything says the server is up (workers' "ready", "pigeon started"): a signal
        sent on seeing those lines (logrotate, a test, systemd) must find its handler, not the
        default action, which ends the process."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen)

    async def run(self) -> None:
        self._handle_signals()
        await self.start()
        sdnotify.ready(f"serving {self.config.hostname}: {len(self.listeners)} listener(s)")
        try:
            await self.stopping.wait()
        finally:
            await self.stop()


def serve(config: Config) -> int:
    found = preflight.problems(config)  # before the log: an unwritable log_file is one of them
    if found:
        for problem in found:
            print(f"pigeon: {problem}", file=sys.stderr)
        print("pigeon: not starting (pigeon check-config lists these problems)", file=sys.stderr)
        return 1
    setup_logging(config)
    tune_allocator()
    tune_gc()
    app = App(config)
    maillog.observe(app.counters.observe)
    try:
        asyncio.run(app.run())
        maillog.flush()
    except (DataDirLocked, PrivilegeError, CannotStart) as exc:
        log.error("cannot start: %s", exc)
        return 1
    except (OSError, ValueError) as exc:  # a port in use, an unreadable password file…
        log.error("cannot start: %s", exc)
        return 1
    return 0
