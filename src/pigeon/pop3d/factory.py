"""What every POP3 session shares, built once by the app: settings, store, login, TLS, locks.

Rules:
1. ``Pop3SessionFactory`` is a ``net.listener.SessionFactory``: ``Listener("pop3", endpoints,
   factory, limits, too_many)``. One factory per listener kind; the ``pop3`` and ``pop3s``
   factories must share one ``MaildropLocks`` (pass the same ``locks``), or a client could hold
   the maildrop through both.
2. ``implicit_tls`` (pop3s, RFC 8314 §3.3) makes each session start with the TLS handshake and
   needs ``tls``; without ``tls`` STLS is not offered.
3. ``Pop3Settings.validate`` runs here: a bad setting fails at start, not in a session.

What can go wrong: ``ValueError`` from the constructor for inconsistent arguments.
"""

from __future__ import annotations

from pigeon.auth.sasl import Authenticator
from pigeon.net.listener import Stream
from pigeon.net.tls import TlsManager
from pigeon.pop3d.locks import MaildropLocks
from pigeon.pop3d.seams import Pop3Store
from pigeon.pop3d.session import Pop3Session
from pigeon.pop3d.settings import Pop3Settings


class Pop3SessionFactory:
    """Builds one ``Pop3Session`` per accepted connection (rule 1)."""

    def __init__(
        self,
        store: Pop3Store,
        authenticator: Authenticator,
        tls: TlsManager | None,
        implicit_tls: bool,
        settings: Pop3Settings,
        locks: MaildropLocks | None = None,
    ) -> None:
        settings.validate()
        if implicit_tls and tls is None:
            raise ValueError("implicit TLS (pop3s) needs a TLS certificate")
        self.store = store
        self.authenticator = authenticator
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.settings = settings
        self.locks = locks if locks is not None else MaildropLocks()

    @property
    def service(self) -> str:
        return "pop3s" if self.implicit_tls else "pop3"

    def __call__(self, stream: Stream) -> Pop3Session:
        return Pop3Session(stream, self)

