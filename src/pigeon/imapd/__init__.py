"""The IMAP server (RFC 3501 IMAP4rev1, RFC 9051 IMAP4rev2) over the mailbox store.

``ImapSessionFactory(store, authenticator, tls, config, implicit_tls)`` is the
``net.listener.SessionFactory`` the app gives to a ``Listener`` for the ``imap`` (STARTTLS)
and ``imaps`` (implicit TLS) services. Modules, by command family: ``session`` (I/O loop, state
table, CAPABILITY NOOP LOGOUT STARTTLS ENABLE ID IDLE), ``auth`` (LOGIN, AUTHENTICATE),
``mailboxes`` (CREATE DELETE RENAME SUBSCRIBE LIST LSUB NAMESPACE STATUS), ``select`` (SELECT
EXAMINE CLOSE UNSELECT EXPUNGE), ``fetch``, ``search``, ``store`` (STORE COPY MOVE), ``append``;
``selected`` keeps the client's sequence-number map and writes untagged updates.
"""

from pigeon.imapd.factory import ImapSessionFactory
from pigeon.imapd.session import ImapSession

__all__ = ["ImapSession", "ImapSessionFactory"]
