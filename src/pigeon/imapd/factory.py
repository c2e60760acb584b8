"""What every IMAP session shares, built once by the app: store, login, TLS, configuration.

Rules:
1. ``ImapSessionFactory`` is a ``net.listener.SessionFactory``:
   ``Listener("imap", endpoints, factory, limits, too_many, tls=ctx_or_None)``. One factory per
   listener kind: ``implicit_tls=True`` for imaps (RFC 8314 §3.3; the listener runs the
   handshake before the session starts, so pass ``tls=tls.listener_context()`` to the Listener),
   ``False`` for imap (STARTTLS is offered when ``tls`` is given).
2. ``config`` is called at the start of each session, so a reloaded configuration applies to
   new sessions (limits, ``[auth] allow_plaintext_on_loopback``).
3. Limits read from the configuration: ``limits.max_message_size`` is APPENDLIMIT and the
   largest APPEND literal; ``limits.max_line_length`` the longest command line;
   ``limits.max_errors`` the bad commands before ``* BYE``; ``limits.session_timeout`` the
   inactivity autologout when it is above RFC 3501's 30 minutes.

What can go wrong: ``ValueError`` from the constructor for implicit TLS without a certificate.
"""

from __future__ import annotations

from collections.abc import Callable

from pigeon.auth.sasl import Authenticator
from pigeon.config import Config
from pigeon.imapd.headermemo import HeaderMemo
from pigeon.imapd.idlewake import IdleGroups
from pigeon.imapd.session import ImapSession
from pigeon.imapd.syncbatch import SyncBatches
from pigeon.net.listener import Stream
from pigeon.net.tls import TlsManager
from pigeon.store.mailbox import MailStore


class ImapSessionFactory:
    """Builds one ``ImapSession`` per accepted connection (rule 1)."""

    def __init__(
        self,
        store: MailStore,
        authenticator: Authenticator,
        tls: TlsManager | None,
        config: Callable[[], Config],
        implicit_tls: bool,
    ) -> None:
        if implicit_tls and tls is None:
            raise ValueError("implicit TLS (imaps) needs a TLS certificate")
        self.store = store
        self.authenticator = authenticator
        self.tls = tls
        self.config = config
        self.implicit_tls = implicit_tls
        self.syncs = SyncBatches()  # the sessions' syncs batched per folder (``syncbatch``)
        self.idlers = IdleGroups(store.changes)  # IDLE sessions woken per folder (``idlewake``)
        self.header_memo = HeaderMemo()  # header values SEARCH tests (``headermemo``)

    @property
    def service(self) -> str:
        return "imaps" if self.implicit_tls else "imap"

    def __call__(self, stream: Stream) -> ImapSession:
        return ImapSession(stream, self)
