"""An SMTP worker process: more cores for the port-25 service (``[smtp] processes``).

One Python process runs its Python code on one core at a time. With ``[smtp] processes = N``
the server starts N - 1 of these workers (``smtpd.workers``); each serves the server's own
listening sockets for the ``smtp`` addresses, handed over at start (``--listen-fds``), so every
process accepts from one queue of new connections and whichever is free takes the next one.
(Until 2026-11-27 each bound the addresses itself with ``SO_REUSEPORT``, which spreads
connections by a hash, whatever each process's load; that is still the fallback when no
sockets are handed over.) A worker runs the SMTP sessions, the intake (its own intake journal,
``queue/journal/w<i>/``) and the fast lane for the local mail it accepted; everything else
belongs to the server, which it tells through a pipe.

Rules:
1. A worker serves the ``smtp`` listeners only (submission, IMAP, POP3, the queue manager, the
   control socket stay in the server). It never runs queue recovery: the server recovers the
   queue before it starts any worker.
2. Its standard output is the pipe to the server, one JSON object per line (standard output is
   pointed at standard error for anything else): ``{"op": "ready"}`` once it listens;
   ``{"op": "schedule", "id": ...}`` for a message it committed to the queue files (a large or
   non-local one, or one its fast lane moved there without an attempt);
   ``{"op": "complete", "id": ..., "results": [...]}`` for a message its fast lane moved into
   the queue files after an attempt (the server records the results: retries, bounces, DSNs);
   ``{"op": "changed", "dir": ...}`` when it delivered into a Maildir (IMAP IDLE).
3. It stops on SIGTERM/SIGINT, and when its standard input reaches end of file (the server
   is gone, even killed): listeners closed, sessions finished (as the server's), fast-lane
   deliveries under way finished or left in its journal, which the server drains (queue rule 10).
4. SIGHUP reloads the configuration (limits, domains, TLS certificates), as the server does.
5. SIGUSR1 (the server's ``pigeon queue flush``) tries the fast lane's held messages at once
   (``delivery.fastlane`` Rule 6); its handler is in place before the worker says ``ready``.

What can go wrong: a bind failure or an unusable configuration ends the worker with exit
status 1 and a log line; the server restarts it after a pause.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from pigeon import maillog
from pigeon.auth.sasl import Authenticator
from pigeon.auth.throttle import AuthThrottle
from pigeon.cleanup.intake import Intake
from pigeon.clocks import SystemClock
from pigeon.config import Config, ConfigError, load_config
from pigeon.core.results import RecipientResult
from pigeon.delivery.fastlane import FastLane
from pigeon.directory import Directory
from pigeon.directory.directory import SERVER_RECHECK
from pigeon.net.listener import Limits, Listener, quiet_accept_errors
from pigeon.net.tls import TlsError, TlsManager, resolve_files
from pigeon.proto.smtp.reply import C421_TOO_MANY_CONNECTIONS
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore
from pigeon.smtpd.policy import SenderPolicy
from pigeon.smtpd.session import SmtpContext, SmtpSession
from pigeon.store.maildir import MaildirStore
from pigeon.submission.ratelimit import SendingLimits, SendingRateLimiter

log = logging.getLogger(__name__)

STOP_GRACE = 10.0  # seconds for sessions and fast-lane deliveries under way, as the server's


def journal_owner(index: int) -> str:
    return f"w{index}"


class _Pipe:
    """Rule 2: newline-delimited JSON to the server, never blocking the event loop."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self._changed: set[str] = set()  # Maildirs changed in this turn of the loop

    def send(self, **message: object) -> None:
        if self._transport.is_closing():
            log.error("smtp worker: the pipe to the server is closed; lost message %s", message)
            return
        self._transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def notify(self, directory: Path) -> None:  # store.changes.ChangeNotifier
        """One ``changed`` line per Maildir per turn of the loop, however many deliveries."""
        if not self._changed:
            asyncio.get_running_loop().call_soon(self._send_changed)
        self._changed.add(str(directory))

    def _send_changed(self) -> None:
        changed, self._changed = self._changed, set()
        for directory in sorted(changed):
            self.send(op="changed", dir=directory)

    def close(self) -> None:
        self._transport.close()


def encode_results(results: list[tuple[RcptState, RecipientResult]]) -> list[list[object]]:
    return [[str(res.recipient), res.status, res.reply.code, res.reply.enhanced, list(res.reply.lines), res.host]
            for _, res in results]


class Worker:
    def __init__(self, config: Config, index: int, pipe_fd: int, listen_fds: list[int] | None = None) -> None:
        self.config = config
        self.index = index
        self.listen_fds = listen_fds or []
        self.clock = SystemClock()
        self._pipe_fd = pipe_fd
        self.stopping = asyncio.Event()

    def current_config(self) -> Config:
        return self.config

    def _build(self, pipe: _Pipe) -> None:
        cfg = self.config
        data = cfg.data_dir
        self.pipe = pipe
        self.directory = Directory(data / "directory.sqlite3", cfg.domains, cfg.postmaster,
                                   cfg.smtp.recipient_delimiter, recheck_after=SERVER_RECHECK)
        self.queue = QueueStore(data / "queue", self.clock, journal=True,
                                journal_owner=journal_owner(self.index), flush=cfg.queue.flush)
        self.store = MaildirStore(data / "mail", cfg.hostname)
        self.intake = Intake(self.queue, self.directory, cfg.hostname, self.clock,
                             max_received=cfg.limits.max_received_headers,
                             local_domain=self.directory.is_local_domain)
        self.fastlane = FastLane(self.queue, self.store, self.directory, self.directory, self.clock, pipe,
                                 finish=self._complete, submit=self._schedule)
        self.queue.orphans = self.on_queued
        self.tls: TlsManager | None = None
        try:
            self.tls = TlsManager.from_config(cfg.tls.cert, cfg.tls.key, cfg.hostname, data)
        except TlsError as exc:
            log.error("smtp worker %d: TLS unavailable (no STARTTLS): %s", self.index, exc)
        limits = SendingLimits(cfg.submission.messages_per_hour, cfg.submission.recipients_per_message)
        self.senders = SenderPolicy(self.directory, SendingRateLimiter(limits, self.clock),
                                    lambda: self.config.smtp.recipient_delimiter)

    def on_queued(self, record: QueueRecord) -> None:
        maillog.queued(record.id, record.envelope.sender, record.size, len(record.envelope.recipients))
        if record.body_data is not None:
            self.fastlane.take(record)
        else:
            self._schedule(record)

    def _schedule(self, record: QueueRecord) -> None:
        self.pipe.send(op="schedule", id=record.id)

    async def _complete(self, record: QueueRecord, results: list[tuple[RcptState, RecipientResult]]) -> None:
        self.pipe.send(op="complete", id=record.id, results=encode_results(results))

    def _limits(self) -> Limits:
        return self.config.limits

    def reload(self) -> None:
        """Rule 4."""
        if self.config.source.startswith("<"):
            return
        try:
            new = load_config(Path(self.config.source))
        except ConfigError as exc:
            log.error("smtp worker %d: reload refused: %s", self.index, exc)
            return
        self.config = new
        self.directory.set_config_domains(new.domains, new.postmaster)
        if self.tls is not None:
            try:
                self.tls.reload(resolve_files(new.tls.cert, new.tls.key, new.hostname, new.data_dir))
            except TlsError as exc:
                log.error("smtp worker %d: reload: TLS files: %s", self.index, exc)

    async def _watch_parent(self) -> None:
        """Rule 3: end of file on standard input means the server is gone."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.read(4096):
            pass
        log.info("smtp worker %d: the server is gone; stopping", self.index)
        self.stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop)
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(self._pipe_fd, "wb", buffering=0))
        pipe = _Pipe(transport)
        self._build(pipe)
        cfg = self.config
        # AUTH on port 25 only when the operator turned it on; the brute-force throttle then
        # counts per process (README: [smtp] processes).
        auth = (Authenticator(self.directory, AuthThrottle(cfg.auth.throttle, self.clock), self.clock)
                if cfg.auth.smtp_auth else None)
        ctx = SmtpContext(self.current_config, self.directory, self.intake, self.on_queued, service="smtp",
                          tls=self.tls, authenticator=auth, senders=self.senders, submission=False)
        too_many = C421_TOO_MANY_CONNECTIONS.with_text(
            f"{cfg.hostname} Too many connections, try again later").to_bytes()
        shared = [socket.socket(fileno=fd) for fd in self.listen_fds]
        listener = Listener("smtp", [(e.host, e.port) for e in cfg.listen.smtp],
                            functools.partial(SmtpSession, ctx=ctx), self._limits, too_many,
                            sockets=shared)
        watch = asyncio.create_task(self._watch_parent())
        try:
            await listener.start()
            loop.add_signal_handler(signal.SIGUSR1, self.fastlane.retry_now)  # Rule 5
            pipe.send(op="ready", pid=os.getpid())
            loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
            loop.add_signal_handler(signal.SIGINT, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            await self.stopping.wait()
        finally:
            watch.cancel()
            await listener.stop(STOP_GRACE)
            await self.fastlane.stop(STOP_GRACE)
            self.queue.close()
            self.directory.close()
            pipe.close()
        return 0


def run_worker(config: Config, index: int, listen_fds: list[int] | None = None) -> int:
    """The ``pigeon smtp-worker`` command (started by the server, not by hand)."""
    from pigeon.app import setup_logging, tune_allocator

    pipe_fd = os.dup(1)
    os.dup2(2, 1)  # Rule 2: anything printed goes to standard error, not into the pipe
    setup_logging(config)
    tune_allocator()
    try:
        rc = asyncio.run(Worker(config, index, pipe_fd, listen_fds).run())
        maillog.flush()
        return rc
    except OSError as exc:
        log.error("smtp worker %d cannot run: %s", index, exc)
        return 1
