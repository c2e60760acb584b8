"""What the server and its worker processes build alike: the SMTP, IMAP and POP3 listeners,
and the names that tie a worker to its intake journal.

Rules:
1. ``smtp_listener`` builds one SMTP service's listener (``smtp``, ``submission`` or
   ``submissions``) from the parts of the process that serves it. AUTH is offered on port 25
   only with ``[auth] smtp_auth``; submission always offers it (and requires it, ``smtpd``).
   ``submissions`` (RFC 8314 §3, implicit TLS) needs TLS: without it, a log line and no listener.
2. Given ``fds`` (a worker's listening sockets, inherited from the server), the listener serves
   them instead of binding the configured addresses; the descriptors are wrapped in ``net``.
3. A process that accepts mail has its own intake journal: ``main`` for the server,
   ``w<index>`` for worker ``index`` (``journal_owner``). The services that accept mail are
   ``INTAKE_SERVICES``; only a worker serving one of them has a journal to drain when it ends.
4. ``srs_codec`` loads (or makes, on first start) the SRS secret of the data directory; the
   server and its workers share it. Without it (unreadable file) forwarding keeps the original
   sender and SRS bounces are unknown users, with a log line at start.
5. ``inbound_verdicts`` builds a process's port-25 checks (``pigeon.inbound``): the mail
   authentication of ``pigeon.mailauth`` over the process's own resolver (its own cache), the
   blocklists, milters, and a DMARC evaluation recorder writing ``reports/dmarc/<owner>.jsonl``
   (``owner`` as for the journal). Only the ``smtp`` service gets them.
6. ``imap_listener`` and ``pop3_listener`` build the IMAP/IMAPS and POP3/POP3S listeners from
   ``MailParts`` (implicit TLS for imaps/pop3s, handshaken by the listener; without TLS, a log
   line and no listener), with ``fds`` as in rule 2. IMAP sessions wait for change notices
   (``CHANGE_SERVICES``): a worker serving them is sent the other processes' (``app.hub``).
   With more than one process, the listeners share out connections by load through the
   pool's board (``MailParts.board``, ``net.listener`` rule 7; one board per process serves
   the IMAP or the POP3 pool: a worker serves one pool, the server both).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import random

from pigeon.auth.credcache import CachedVerifier
from pigeon.auth.sasl import Authenticator, PasswordVerifier
from pigeon.cleanup.intake import Intake
from pigeon.cleanup.srs import SrsExpander
from pigeon.config import Config
from pigeon.config.model import AuthConfig
from pigeon.core.clock import Clock
from pigeon.dns.resolver import DnsResolver
from pigeon.inbound.authchecks import MailAuthChecks
from pigeon.inbound.reports import Recorder, reports_dir
from pigeon.inbound.verdict import Verdicts
from pigeon.directory import Directory
from pigeon.mailauth.srs import Srs, load_secret
from pigeon.net.listener import ConnectionGate, Limits, Listener, adopt_listening_sockets
from pigeon.net.loadboard import LoadBoard
from pigeon.net.tls import TlsManager
from pigeon.imapd import ImapSessionFactory
from pigeon.pop3d import MaildropLocks, Pop3SessionFactory, Pop3Settings
from pigeon.store.mailbox import MailStore
from pigeon.proto.smtp.reply import C421_TOO_MANY_CONNECTIONS
from pigeon.queue.record import QueueRecord
from pigeon.smtpd.policy import SenderPolicy
from pigeon.smtpd.session import SmtpContext, SmtpSession

log = logging.getLogger(__name__)

# RFC 1939 §3: a POP3 autologout timer must be at least 10 minutes.
POP3_MIN_IDLE = 600.0
IMAP_TOO_MANY = b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
POP3_TOO_MANY = b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"

SMTP_SERVICES = ("smtp", "submission", "submissions")
INTAKE_SERVICES = frozenset(SMTP_SERVICES)  # rule 3
IMAP_SERVICES = ("imap", "imaps")
POP3_SERVICES = ("pop3", "pop3s")
CHANGE_SERVICES = frozenset(IMAP_SERVICES)  # rule 4: a worker whose sessions wait for change notices


def credential_verifier(directory: Directory, auth: AuthConfig, clock: Clock) -> PasswordVerifier:
    """The directory behind the verified-credential cache (``auth.credcache``; one per
    process, with its own secret), or the directory alone when the cache is off."""
    if auth.credential_cache_ttl <= 0:
        return directory
    return CachedVerifier(directory, clock, auth.credential_cache_ttl, auth.credential_cache_size)


def pop3_lock_dir(cfg: Config) -> Path:
    """The maildrop locks' directory, the same in every process (``pop3d.locks`` rule 2)."""
    return cfg.data_dir / "pop3-locks"


def journal_owner(index: int) -> str:
    """Rule 3: worker ``index``'s intake journal, ``queue/journal/w<index>/``."""
    return f"w{index}"


@dataclass(frozen=True, slots=True)
class SmtpParts:
    """What an SMTP listener needs of the process that serves it."""

    config: Callable[[], Config]  # the current configuration (SIGHUP replaces it)
    directory: Directory
    intake: Intake
    on_queued: Callable[[QueueRecord], None]
    tls: TlsManager | None
    authenticator: Authenticator
    senders: SenderPolicy
    gate: ConnectionGate | None = None  # the process's one connection count (net.listener rule 2)
    srs: Srs | None = None  # rule 4

    verdicts: Verdicts | None = None  # port 25's checks (rule 5)


SRS_SECRET = "srs.secret"


def srs_codec(data_dir: Path) -> Srs | None:
    """Rule 4."""
    try:
        return Srs(load_secret(data_dir / SRS_SECRET))
    except (OSError, ValueError) as exc:
        log.error("SRS unavailable (forwarded mail keeps its sender): %s", exc)
        return None


def expander(directory: Directory, srs: Srs | None, clock: Clock) -> Directory | SrsExpander:
    """The intake's recipient expander: the directory, with SRS bounces decoded (cleanup.srs)."""
    return directory if srs is None else SrsExpander(directory, srs, directory.is_local_domain, clock)


def inbound_verdicts(config: Callable[[], Config], resolver: DnsResolver, directory: Directory,
                     owner: str, clock: Clock) -> Verdicts:
    """Rule 5."""
    cfg = config()
    checks = MailAuthChecks(resolver, cfg.hostname, clock.now, random.random, cache=resolver)
    recorder = Recorder(reports_dir(cfg.data_dir), owner, clock.now)
    return Verdicts(config, checks, resolver, directory.is_local_domain, recorder.record, clock.now,
                    close=recorder.close)


def smtp_listener(service: str, parts: SmtpParts, fds: Sequence[int] = ()) -> Listener | None:
    """Rules 1 and 2; ``None`` when the service cannot run (a log line says why). Raises
    ``OSError`` when ``fds`` are not listening sockets (``net.adopt_listening_sockets``)."""
    cfg = parts.config()
    port25 = service == "smtp"
    implicit = None
    if service == "submissions":  # RFC 8314 §3: implicit TLS on port 465
        if parts.tls is None:
            log.error("service submissions needs TLS, which is unavailable; not listening")
            return None
        implicit = parts.tls.listener_context()
    auth = parts.authenticator if (not port25 or cfg.auth.smtp_auth) else None
    ctx = SmtpContext(parts.config, parts.directory, parts.intake, parts.on_queued, service=service,
                      tls=parts.tls, authenticator=auth, senders=parts.senders, submission=not port25,
                      srs=parts.srs, verdicts=parts.verdicts if port25 else None)
    too_many = C421_TOO_MANY_CONNECTIONS.with_text(
        f"{cfg.hostname} Too many connections, try again later").to_bytes()
    endpoints = getattr(cfg.listen, service)
    config = parts.config

    def limits() -> Limits:
        return config().limits

    return Listener(service, [(e.host, e.port) for e in endpoints], functools.partial(SmtpSession, ctx=ctx),
                    limits, too_many, tls=implicit, gate=parts.gate,
                    sockets=adopt_listening_sockets(fds) if fds else None)


@dataclass(frozen=True, slots=True)
class MailParts:
    """What IMAP and POP3 listeners need of the process that serves them."""

    config: Callable[[], Config]
    mailstore: MailStore
    authenticator: Authenticator
    tls: TlsManager | None
    pop3_locks: MaildropLocks  # one registry for pop3 and pop3s (file locks: across processes too)
    gate: ConnectionGate | None = None
    board: LoadBoard | None = None  # rule 6: a worker's pool's load board
    boards: Mapping[str, LoadBoard] | None = None  # rule 6: the server's, by pool (imap, pop3)


BOARD_POOLS = frozenset({"imap", "pop3"})  # rule 6: the pools that share out connections by load


def load_boards(pools: Sequence[tuple[str, int]]) -> dict[str, LoadBoard]:
    """Rule 6: a load board for each pool of ``BOARD_POOLS`` with more than one process
    (``pools``: name and processes, in ``app.master.plan``'s order), with a slot for the
    server (0) and one for every worker index of every pool; none where the system has no
    ``memfd_create`` (the listeners then accept as they come)."""
    slots = 1 + sum(max(n - 1, 0) for _, n in pools)
    if not hasattr(os, "memfd_create"):
        return {}
    return {name: LoadBoard.create(slots, f"pigeon-{name}-load") for name, n in pools
            if name in BOARD_POOLS and n > 1}


def _board(parts: MailParts, pool: str) -> LoadBoard | None:
    if parts.boards is not None:
        return parts.boards.get(pool)
    return parts.board


def _implicit(service: str, parts: MailParts) -> tuple[bool, bool]:
    """(implicit TLS, can serve) for ``service`` (rule 4)."""
    implicit = service.endswith("s")
    if implicit and parts.tls is None:
        log.error("service %s needs TLS, which is unavailable; not listening", service)
        return implicit, False
    return implicit, True


def imap_listener(service: str, parts: MailParts, fds: Sequence[int] = ()) -> Listener | None:
    """Rule 4 for ``imap`` / ``imaps``."""
    implicit, ok = _implicit(service, parts)
    if not ok:
        return None
    config = parts.config
    factory = ImapSessionFactory(parts.mailstore, parts.authenticator, parts.tls, config, implicit)
    front = parts.tls.listener_context() if implicit and parts.tls is not None else None

    def limits() -> Limits:
        return config().limits

    endpoints = getattr(config().listen, service)
    return Listener(service, [(e.host, e.port) for e in endpoints], factory, limits, IMAP_TOO_MANY,
                    tls=front, gate=parts.gate, sockets=adopt_listening_sockets(fds) if fds else None,
                    board=_board(parts, "imap"))


def pop3_listener(service: str, parts: MailParts, fds: Sequence[int] = ()) -> Listener | None:
    """Rule 4 for ``pop3`` / ``pop3s``."""
    implicit, ok = _implicit(service, parts)
    if not ok:
        return None
    config = parts.config
    cfg = config()
    settings = Pop3Settings(cfg.hostname, allow_plaintext_on_loopback=cfg.auth.allow_plaintext_on_loopback,
                            idle_timeout=max(POP3_MIN_IDLE, cfg.limits.session_timeout))
    factory = Pop3SessionFactory(parts.mailstore, parts.authenticator, parts.tls, implicit, settings, parts.pop3_locks)
    front = parts.tls.listener_context() if implicit and parts.tls is not None else None

    def limits() -> Limits:
        return config().limits

    endpoints = getattr(cfg.listen, service)
    return Listener(service, [(e.host, e.port) for e in endpoints], factory, limits, POP3_TOO_MANY,
                    tls=front, gate=parts.gate, sockets=adopt_listening_sockets(fds) if fds else None,
                    board=_board(parts, "pop3"))
