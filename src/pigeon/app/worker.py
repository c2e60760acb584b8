"""A worker process's composition root (``pigeon worker``, started by ``app.master``, never by
hand): more cores for a service.

A worker serves some of the server's services on the server's own listening sockets (handed
over at start, ``--service smtp=5,6``), so every process accepts from one queue of new
connections and whichever is free takes the next one. It builds what those services need
(``SERVICES``) and tells the server the rest through ``app.ipc``. The ``smtp`` service: the
SMTP sessions, an intake with its own journal (``queue/journal/w<index>/``) and the fast road
(``qmgr.lane``) for the mail it accepted into that journal: local mail to the fast agent
(``delivery.fastlane``), relay mail to its own relay agent (``delivery.relay``);
``imap``/``imaps`` and ``pop3``/``pop3s``: sessions on the same mail store (rule 10). The queue
manager, recovery, the control socket and submission stay in the server.

Rules:
1. Its standard output is its pipe to the server; at start it is moved to a descriptor of its
   own and descriptor 1 pointed at standard error, so anything printed goes to the log.
2. It says ``Hello`` first and waits ``HELLO_TIMEOUT`` for the server's; a server of another
   ``IPC_VERSION`` is refused (logged, exit status ``EXIT_REFUSED``) before anything is built or
   served. End of file first: the server is gone, it exits 0.
3. It builds each service it is given from ``SERVICES`` (an unknown one: exit status 1 and a log
   line). It never runs queue recovery: the server recovered the queue before starting it.
4. Once every listener listens and its SIGUSR1 and SIGHUP handlers are in place, it says
   ``Ready`` (``app.master`` rule 4).
5. It tells the server about mail (``WorkerLink``): ``Schedule`` for a message it committed to the
   queue files (a large or mixed one, or one its fast road moved there without an attempt),
   ``Complete`` with the results of its fast road's attempt for one moved there after it (a
   ``Complete`` over the line limit becomes a ``Schedule``: the server attempts it again),
   ``Changed`` once per Maildir per turn of the loop when it delivered there (IMAP IDLE).
6. It stops on SIGTERM/SIGINT, and at end of file on its standard input (the server is gone,
   even killed): listeners closed, sessions finished (``WORKER_STOP_GRACE``, as the server's),
   fast-lane deliveries finished or left in its journal, which the server drains (queue rule 10).
7. SIGHUP reloads the configuration (limits, domains, TLS certificates), as the server does;
   SIGUSR1 (``pigeon queue flush``) tries the fast road's held messages at once
   (``qmgr.lane`` Rule 5). Both reopen ``log_file`` (logrotate, ``app.runtime`` rule 3).
   A worker runs as whoever the server is once it dropped its privileges (``app.privileges``):
   it is started after the drop.
8. Its metrics (``pigeon.web.metrics``: mail events, sessions, TLS handshakes, refused logins)
   are counted in its own ``MailCounters`` and sent whole to the server as ``Counters`` every
   ``SNAPSHOT_INTERVAL`` seconds and once more when it stops; the server's ``/metrics`` adds them up.
9. Relay mail it accepted (every recipient in another domain) it relays itself, from its journal
   on its fast road (``qmgr.lane``), with its own relay agent and connection cache; the relay
   limits (``delivery.relay`` Rule 5) count per process. Its relay agent has the server's
   outbound stage (``delivery.outbound``): DKIM signing, SRS and ARC for forwards, with the same
   keys and SRS secret from the data directory.

10. IMAP and POP3 (``imap``, ``imaps``, ``pop3``, ``pop3s``): a mail store with its own
   ``ChangeBus`` whose notices go to the server (``Changed``, rule 5), which passes them on to
   the other processes; the server's ``Changed`` wake this process's IDLE sessions only
   (``ChangeBus.wake``: never sent back). Its own AUTH throttle and credential cache, as the
   SMTP side's; POP3's maildrop locks are file locks shared with every process. With its
   pool's load board (``--board FD:SLOTS``, ``net.loadboard``) its listeners take connections
   by load (``net.listener`` rule 7), in the board's slot of its index; released at its end.

What can go wrong: a bad descriptor, a bind failure or an unusable configuration ends the worker
with exit status 1 and a log line; the server restarts it after a pause (``app.master`` rule 5).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from pigeon import maillog
from pigeon.app import ipc
from pigeon.app.master import WORKER_STOP_GRACE, Command, WorkerSpec
from pigeon.app.runtime import freeze_startup, reopen_logs, setup_logging, tune_allocator, tune_gc
from pigeon.net.loadboard import LoadBoard
from pigeon.app.services import (MailParts, SmtpParts, credential_verifier, expander, imap_listener,
                                 inbound_verdicts, journal_owner, pop3_listener, pop3_lock_dir,
                                 smtp_listener, srs_codec)
from pigeon.auth.sasl import Authenticator
from pigeon.auth.throttle import AuthThrottle
from pigeon.cleanup.intake import Intake
from pigeon.clocks import SystemClock
from pigeon.config import Config, ConfigError, load_config
from pigeon.core.results import RecipientResult
from pigeon.delivery.fastlane import FastLocalDelivery
from pigeon.delivery.outbound import Outbound
from pigeon.delivery.relay import RelayDelivery, RelaySettings
from pigeon.directory import Directory
from pigeon.dns.resolver import DnsResolver
from pigeon.directory.errors import DirectoryError
from pigeon.directory.directory import SERVER_RECHECK
from pigeon.mailauth.keys import KeyStore
from pigeon.net.listener import Listener, quiet_accept_errors
from pigeon.net.tls import TlsError, TlsManager
from pigeon.app.web import tls_files
from pigeon.qmgr.lane import JournalLane
from pigeon.web.metrics import SNAPSHOT_INTERVAL, MailCounters
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import FileQueueStore
from pigeon.smtpd.policy import SenderPolicy
from pigeon.pop3d import MaildropLocks
from pigeon.store.changes import ChangeBus
from pigeon.store.mailbox import MailStore
from pigeon.store.maildir import MaildirStore
from pigeon.submission.ratelimit import SendingLimits, SendingRateLimiter

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 30.0  # rule 2: the server writes its hello as soon as it started us
EXIT_REFUSED = 3  # rule 2: a server of another ipc version


def worker_command(config_file: str | None) -> Command:
    """The command line ``app.master`` runs for a worker: this Python, ``-m pigeon worker``."""

    def command(spec: WorkerSpec) -> list[str]:
        cmd = [sys.executable, "-m", "pigeon"]
        if config_file is not None:
            cmd += ["--config", config_file]
        cmd += ["worker", "--pool", spec.pool, "--index", str(spec.index)]
        if spec.board is not None:
            cmd += ["--board", f"{spec.board[0]}:{spec.board[1]}"]
        for service, fds in spec.listen:
            cmd += ["--service", f"{service}={','.join(str(fd) for fd in fds)}" if fds else service]
        return cmd

    return command


class WorkerLink:
    """Rule 5: the worker's end of ``app.ipc``, writing without ever blocking the event loop;
    also the fast lane's ``ChangeNotifier``."""

    def __init__(self, transport: asyncio.WriteTransport, name: str) -> None:
        self._transport = transport
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()  # the loop's
        self._changed: set[str] = set()  # folders changed in this turn of the loop

    def send(self, msg: ipc.WorkerMessage) -> None:
        if self._transport.is_closing():
            log.error("%s: the pipe to the server is closed; lost %s", self._name, msg)
            return
        try:
            line = ipc.encode(msg)
        except ipc.IpcError as exc:
            if not isinstance(msg, ipc.Complete):
                log.error("%s: %s; not sent", self._name, exc)
                return
            log.error("%s: %s: %s; the server attempts it again", self._name, msg.queue_id, exc)
            line = ipc.encode(ipc.Schedule(msg.queue_id))
        self._transport.write(line)

    def notify(self, directory: Path) -> None:  # store.changes.ChangeNotifier
        """One ``Changed`` per folder per turn of the loop, however many changes; safe from any
        thread (the store's operations run in threads). From the loop's own thread (the fast
        lane) without ``call_soon_threadsafe``, whose wake-up of the loop is a system call each."""
        if threading.get_ident() == self._thread:
            self._add_changed(str(directory))
        else:
            self._loop.call_soon_threadsafe(self._add_changed, str(directory))

    def _add_changed(self, directory: str) -> None:
        if not self._changed:
            self._loop.call_soon(self._send_changed)
        self._changed.add(directory)

    def _send_changed(self) -> None:
        changed, self._changed = self._changed, set()
        for directory in sorted(changed):
            self.send(ipc.Changed(directory))

    def close(self) -> None:
        self._transport.close()


class _Inbox(asyncio.Protocol):
    """The worker's standard input: the server's ``Hello``, its ``Changed`` notices (rule 10),
    then end of file when it is gone."""

    def __init__(self, name: str, gone: asyncio.Event) -> None:
        self.changed: Callable[[Path], None] | None = None  # set once the services are built
        self._name = name
        self._gone = gone
        self._reader = ipc.master_reader()
        self.first: asyncio.Future[ipc.MasterMessage | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._take(self._reader.feed(data))

    def eof_received(self) -> bool | None:
        self._take(self._reader.end())
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _take(self, items: Sequence[ipc.MasterMessage | ipc.IpcError]) -> None:
        for item in items:
            if isinstance(item, ipc.IpcError):
                if not self.first.done():
                    self.first.set_exception(item)
                else:
                    log.error("%s: refused a line from the server: %s", self._name, item)
            elif not self.first.done():
                self.first.set_result(item)
            elif isinstance(item, ipc.Changed):
                if self.changed is not None:
                    self.changed(Path(item.directory))
            else:
                log.error("%s: a second hello from the server, ignored", self._name)

    def _end(self) -> None:
        if not self.first.done():
            self.first.set_result(None)
        if not self._gone.is_set():
            log.info("%s: the server is gone; stopping", self._name)
            self._gone.set()


class Worker:
    def __init__(self, config: Config, pool: str, index: int, pipe_fd: int,
                 listen: Sequence[tuple[str, Sequence[int]]], board: LoadBoard | None = None) -> None:
        self.config = config
        self.index = index
        self.board = board  # rule 10
        self.name = f"{pool} worker {index}"
        self.listen = [(service, list(fds)) for service, fds in listen]
        self.clock = SystemClock()
        self._pipe_fd = pipe_fd
        self.stopping = asyncio.Event()
        self.listeners: list[Listener] = []
        self.lane: JournalLane | None = None
        self.relay: RelayDelivery | None = None
        self.queue: FileQueueStore | None = None
        self._smtp: SmtpParts | None = None
        self.counters = MailCounters()  # sent to the server every SNAPSHOT_INTERVAL (rule 8)
        self._mail: MailParts | None = None
        self.changes = ChangeBus()

    def current_config(self) -> Config:
        return self.config

    # -- what the services share, built on first use (rule 3) ---------------------------------

    def _build_common(self, link: WorkerLink) -> None:
        cfg = self.config
        self.link = link
        self.changes.forward = link  # rule 10
        self.directory = Directory(cfg.data_dir / "directory.sqlite3", cfg.domains, cfg.postmaster,
                                   cfg.smtp.recipient_delimiter, recheck_after=SERVER_RECHECK)
        self.tls: TlsManager | None = None
        try:
            self.tls = TlsManager(tls_files(cfg))  # the server's choice (app.web rule 1)
        except TlsError as exc:
            log.error("%s: TLS unavailable (no STARTTLS): %s", self.name, exc)

    def smtp_parts(self) -> SmtpParts:
        """The intake side: its own journal, the fast road, sender policy, AUTH."""
        if self._smtp is not None:
            return self._smtp
        cfg = self.config
        data = cfg.data_dir
        self.queue = FileQueueStore(data / "queue", self.clock, journal=True,
                                    journal_owner=journal_owner(self.index), flush=cfg.queue.flush,
                                    local_domain=self.directory.is_local_domain,
                                    relay_journal=True)  # rule 8 of queue.store
        store = MaildirStore(data / "mail", cfg.hostname, commits=self.queue.commits)  # one engine
        srs = srs_codec(data)
        intake = Intake(self.queue, expander(self.directory, srs, self.clock), cfg.hostname, self.clock,
                        max_received=cfg.limits.max_received_headers)
        fast = FastLocalDelivery(store, self.directory, self.queue.commits, self.link)
        # Relay mail it accepted is relayed from its journal by its own relay agent (rule 9):
        # its concurrency limits count per process.
        resolver = DnsResolver([(e.host, e.port) for e in cfg.dns.nameservers], self.clock)
        # The same outbound stage as the server's (DKIM signing, SRS and ARC for forwards): the
        # keys the server made at its start (data_dir/dkim), the SRS secret above.
        outbound = Outbound(KeyStore(data / "dkim"), srs, self.directory.is_local_domain,
                            lambda: self.config.relay_domains, cfg.hostname, self.clock)
        self.relay = RelayDelivery(resolver, RelaySettings.from_config(cfg), outbound, self.clock,
                                   report_owner=journal_owner(self.index))  # its own TLS-RPT file
        self.lane = JournalLane(self.queue, fast, self.directory, self.clock,
                                finish=self._complete, submit=self._schedule, relay=self.relay)
        self.queue.orphans = self.on_queued
        limits = SendingLimits(cfg.submission.messages_per_hour, cfg.submission.recipients_per_message)
        senders = SenderPolicy(self.directory, SendingRateLimiter(limits, self.clock),
                               lambda: self.config.smtp.recipient_delimiter)
        # The brute-force throttle counts per process (README: [smtp] processes).
        auth = Authenticator(credential_verifier(self.directory, cfg.auth, self.clock), AuthThrottle(cfg.auth.throttle, self.clock), self.clock)
        auth.on_failure = self.counters.auth_failure
        resolver = DnsResolver([(e.host, e.port) for e in cfg.dns.nameservers], self.clock)
        verdicts = inbound_verdicts(self.current_config, resolver, self.directory, journal_owner(self.index),
                                    self.clock)
        self._smtp = SmtpParts(self.current_config, self.directory, intake, self.on_queued, self.tls, auth, senders,
                               srs=srs, verdicts=verdicts)
        return self._smtp

    def mail_parts(self) -> MailParts:
        """Rule 10: the IMAP and POP3 side."""
        if self._mail is not None:
            return self._mail
        cfg = self.config
        store = MailStore(cfg.data_dir / "mail", cfg.hostname, self.clock,
                          max_append=cfg.limits.max_message_size, changes=self.changes)
        auth = Authenticator(credential_verifier(self.directory, cfg.auth, self.clock),
                             AuthThrottle(cfg.auth.throttle, self.clock), self.clock)
        self._mail = MailParts(self.current_config, store, auth, self.tls, MaildropLocks(pop3_lock_dir(cfg)),
                               board=self.board)
        return self._mail

    def on_queued(self, record: QueueRecord) -> None:
        maillog.queued(record.id, record.envelope.sender, record.size, len(record.envelope.recipients))
        journaled = self.queue is not None and self.queue.in_journal(record.id)
        if self.lane is not None and journaled:
            self.lane.take(record)  # the fast road, as the server's queue manager chooses it
        else:
            self._schedule(record)

    def _schedule(self, record: QueueRecord) -> None:
        self.link.send(ipc.Schedule(record.id))

    async def _complete(self, record: QueueRecord, results: list[tuple[RcptState, RecipientResult]]) -> None:
        self.link.send(ipc.Complete(record.id, tuple(res for _, res in results)))

    # -- signals (rule 7) -----------------------------------------------------------------------

    def reload(self) -> None:
        reopen_logs()  # rule 7: logrotate
        if self.config.source.startswith("<"):
            return
        try:
            new = load_config(Path(self.config.source))
        except ConfigError as exc:
            log.error("%s: reload refused: %s", self.name, exc)
            return
        self.config = new
        self.directory.set_config_domains(new.domains, new.postmaster)
        if self.relay is not None:
            self.relay.reconfigure(RelaySettings.from_config(new))
        if self.tls is not None:
            try:
                self.tls.reload(tls_files(new))
            except TlsError as exc:
                log.error("%s: reload: TLS files: %s", self.name, exc)

    def _counters_now(self) -> None:
        """Rule 8: the whole snapshot (the server keeps the last one)."""
        try:
            self.link.send(ipc.Counters(os.getpid(), tuple(self.counters.snapshot())))
        except (ipc.IpcError, AttributeError, OSError) as exc:  # no link yet, or too many series
            log.warning("%s: metrics not sent: %s", self.name, exc)

    async def _send_counters(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            self._counters_now()

    def flush(self) -> None:
        reopen_logs()  # rule 7: the server passes its SIGUSR1 (logrotate) on
        if self.lane is not None:
            self.lane.retry_now()

    # -- the life of the process ----------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(self._pipe_fd, "wb", buffering=0))
        link = WorkerLink(transport, self.name)
        link.send(ipc.hello())  # rule 2
        inbox = _Inbox(self.name, self.stopping)
        await loop.connect_read_pipe(lambda: inbox, sys.stdin)
        try:
            server = await asyncio.wait_for(inbox.first, HELLO_TIMEOUT)
            if server is None:
                return 0  # the server is gone already
            ipc.check_hello(server)
        except (ipc.IpcError, TimeoutError) as exc:
            log.error("%s: refusing the server: %s", self.name, exc or f"no hello in {HELLO_TIMEOUT:.0f} s")
            link.close()
            return EXIT_REFUSED
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)  # from here on, a stop is graceful
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        self._build_common(link)
        inbox.changed = self.changes.wake  # rule 8
        try:
            for service, fds in self.listen:  # rule 3
                build = SERVICES[service]
                lst = build(self, service, fds)
                if lst is not None:
                    lst.on_tls = self.counters.tls_handshake
                    self.listeners.append(lst)
                    await lst.start()
            loop.add_signal_handler(signal.SIGUSR1, self.flush)  # rule 4: before Ready
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            link.send(ipc.Ready(tuple(service for service, _ in self.listen)))
            freeze_startup()  # runtime rule 5
            metrics = asyncio.create_task(self._send_counters(), name="worker-metrics")
            await self.stopping.wait()
            metrics.cancel()
        finally:
            self._counters_now()
            await self._stop()
        return 0

    async def _stop(self) -> None:
        """Rule 6."""
        for lst in self.listeners:
            await lst.stop(WORKER_STOP_GRACE)
        if self.lane is not None:
            await self.lane.stop(WORKER_STOP_GRACE)
        if self._smtp is not None and self._smtp.verdicts is not None:
            self._smtp.verdicts.close()  # the DMARC evaluations gathered (inbound.reports rule 1)
        if self.relay is not None:
            await self.relay.close()
        if self.queue is not None:
            self.queue.close()
        if self._mail is not None:
            self._mail.mailstore.close()
        if self.board is not None:
            self.board.release()  # rule 10
            self.board.close()
        self.directory.close()
        self.link.close()


def _smtp(worker: Worker, service: str, fds: list[int]) -> Listener | None:
    return smtp_listener(service, worker.smtp_parts(), fds)


def _imap(worker: Worker, service: str, fds: list[int]) -> Listener | None:
    return imap_listener(service, worker.mail_parts(), fds)


def _pop3(worker: Worker, service: str, fds: list[int]) -> Listener | None:
    return pop3_listener(service, worker.mail_parts(), fds)


# The services a worker can serve, and how each is built (rule 3).
SERVICES: dict[str, Callable[[Worker, str, list[int]], Listener | None]] = {
    "smtp": _smtp, "imap": _imap, "imaps": _imap, "pop3": _pop3, "pop3s": _pop3}


def run_worker(config: Config, pool: str, index: int, listen: Sequence[tuple[str, Sequence[int]]],
               board: tuple[int, int] | None = None) -> int:
    """The ``pigeon worker`` command (``board``: descriptor and slots, rule 10)."""
    name = f"{pool} worker {index}"
    pipe_fd = os.dup(1)
    os.dup2(2, 1)  # rule 1: anything printed goes to standard error, not into the pipe
    setup_logging(config)
    tune_allocator()
    tune_gc()
    unknown = [service for service, _ in listen if service not in SERVICES]
    if unknown or not listen:
        log.error("%s cannot run: no such worker service %s (known: %s)", name,
                  ", ".join(unknown) or "(none given)", ", ".join(sorted(SERVICES)))
        return 1
    try:
        worker = Worker(config, pool, index, pipe_fd, listen,
                        None if board is None else LoadBoard.attach(board[0], index, board[1]))
        maillog.observe(worker.counters.observe)
        rc = asyncio.run(worker.run())
        maillog.flush()
        return rc
    except (OSError, DirectoryError) as exc:  # a bad descriptor, a bind failure, an unreadable directory
        log.error("%s cannot run: %s", name, exc)
        return 1
