"""The web endpoint's composition: listeners for ``pigeon.web``, its TLS, the ACME renewer, the
metrics registry and the health check.

Rules:
1. Certificates: ``[tls] cert/key`` when set; else, with ``[acme]``, the ACME certificate once
   one is stored; else the self-signed development certificate (``tls_files``). The server and
   every worker use this one function, so they always agree.
2. ``https`` is served with the mail listeners' ``TlsManager.listener_context()``: a renewed
   certificate reaches it as it reaches 465/993/995 (``net.tls`` rule 5).
3. After a new ACME certificate is stored, the server reloads its ``TlsManager`` and sends
   SIGHUP to its ready workers, which reload theirs from the same files (``app.worker`` rule 7).
4. The health check (``/healthz``) fails when a listener stopped serving, a queue manager task
   ended, the queue directory is not writable, or a worker process is not running.
5. With ``[acme] challenge = "tls-alpn-01"`` the https listener answers the validations
   (``net.tls`` rule 8): its context switches a handshake for a pending name to that name's
   challenge certificate; the mail listeners never do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from pigeon.config import Config
from pigeon.net.tls import AlpnChallenges, TlsFiles, TlsManager, resolve_files
from pigeon.queue.api import QueueStore
from pigeon.queue.record import State
from pigeon.web.acme import AcmeIssuer, CertStore, Challenges, Renewer, certificate_names
from pigeon.web.http import monitoring, site
from pigeon.web.metrics import Exporter, MailCounters, QueueSnapshot

if TYPE_CHECKING:
    from pigeon.app.server import App

log = logging.getLogger("pigeon.web")

QUEUE_STATES: tuple[State, ...] = ("incoming", "active", "deferred", "hold")


def tls_files(cfg: Config) -> TlsFiles:
    """Rule 1."""
    if cfg.tls.cert is None and cfg.acme is not None:
        store = CertStore(cfg.data_dir)
        if store.current() is not None:
            return TlsFiles(store.cert, store.key)
    return resolve_files(cfg.tls.cert, cfg.tls.key, cfg.hostname, cfg.data_dir)


def queue_snapshot(queue: QueueStore, now: Callable[[], float]) -> QueueSnapshot:
    sizes: dict[str, int] = dict.fromkeys(QUEUE_STATES, 0)
    oldest: float | None = None
    for state in QUEUE_STATES:
        for record in queue.scan((state,)):
            sizes[state] += 1
            oldest = record.created if oldest is None else min(oldest, record.created)
    journal = queue.journal_messages()
    sizes["journal"] = len(journal)
    for record in journal:
        oldest = record.created if oldest is None else min(oldest, record.created)
    return QueueSnapshot(sizes, max(0.0, now() - oldest) if oldest is not None else 0.0)


class WebEndpoint:
    """The http, https and metrics listeners of the server, and the ACME renewer."""

    def __init__(self, app: App) -> None:
        self.app = app
        acme = app.config.acme
        self.alpn = (AlpnChallenges(app.config.data_dir / "acme" / "alpn")
                     if acme is not None and acme.challenge == "tls-alpn-01" else None)
        self.challenges = Challenges(self.alpn)
        self.registry = CollectorRegistry(auto_describe=False)
        self.exporter = Exporter(app.counters, lambda: queue_snapshot(app.queue, time.time))
        self.registry.register(self.exporter)
        self._runners: list[web.AppRunner] = []
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.app.config
        listen = cfg.listen
        sites: list[tuple[web.Application, str, list[tuple[str, int]], bool]] = []
        if listen.http or listen.https:
            application = site(self.app.current_config, self.challenges)
            if listen.http:
                sites.append((application, "http", [(e.host, e.port) for e in listen.http], False))
            if listen.https:
                if self.app.tls is None:
                    log.error("service https needs TLS, which is unavailable; not listening")
                else:
                    sites.append((application, "https", [(e.host, e.port) for e in listen.https], True))
        if listen.metrics:
            sites.append((monitoring(self.registry, self.health), "metrics",
                          [(e.host, e.port) for e in listen.metrics], False))
        runners: dict[int, web.AppRunner] = {}
        for application, service, endpoints, secure in sites:
            runner = runners.get(id(application))
            if runner is None:
                runner = web.AppRunner(application, access_log=None, handle_signals=False)
                await runner.setup()
                runners[id(application)] = runner
                self._runners.append(runner)
            for host, port in endpoints:
                ssl_context = None
                if secure and self.app.tls is not None:  # rule 5: only https answers tls-alpn-01
                    ssl_context = (self.app.tls.https_context(self.alpn) if self.alpn is not None
                                   else self.app.tls.listener_context())
                await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
                log.info("listening service=%s on %s:%d", service, host, port)
        if cfg.acme is not None and cfg.tls.cert is None:  # acme rule 7
            issuer = AcmeIssuer(cfg.acme, CertStore(cfg.data_dir), self.challenges)
            renewer = Renewer(issuer, lambda: certificate_names(self.app.config.hostname, self.app.config.domains),
                              self.app.clock, self.installed)
            self._renewer = asyncio.create_task(renewer.run(), name="acme-renewer")

    async def installed(self) -> None:
        """Rule 3."""
        tls: TlsManager | None = self.app.tls
        if tls is None:
            log.error("acme: a certificate was issued but TLS is unavailable in this process")
            return
        files = tls_files(self.app.config)
        if tls.reload(files) and self.app.master is not None:
            self.app.master.reload()

    async def health(self) -> list[str]:
        """Rule 4."""
        app = self.app
        problems = [f"listener {lst.service} is not serving" for lst in app.listeners
                    if not lst.servers or not all(s.is_serving() for s in lst.servers)]
        if not app.qmgr.running():
            problems.append("the queue manager is not running")
        queue_dir: Path = app.config.data_dir / "queue"
        if not os.access(queue_dir, os.W_OK | os.X_OK):
            problems.append(f"the queue directory {queue_dir} is not writable")
        if app.master is not None:
            ready = {spec.name for spec in app.master.ready()}
            problems.extend(f"worker {spec.name} is not running" for spec in app.master.specs
                            if spec.name not in ready)
        return problems

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            try:
                await self._renewer
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("acme: the renewer ended with an error")
        for runner in self._runners:
            await runner.cleanup()
