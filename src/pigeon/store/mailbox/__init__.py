"""The per-account mailbox store: Maildir++ folders plus a SQLite index (IMAP and POP3 use it).

``MailStore(mail_root, hostname, clock).account(address)`` → ``Account`` (folders, APPEND,
SELECT) → ``Mailbox`` (one session's view). See ``docs/architecture.md`` (Maildir layout) and
the module docstrings: ``folders`` (names), ``flags`` (file names), ``index`` (SQLite),
``scan`` (disk ⇄ index), ``ops`` (STORE/EXPUNGE/COPY/MOVE), ``view`` (the view), ``account``.
All calls block: the servers run them in worker threads (``asyncio.to_thread``), except
those made for the event loop, which never wait (``view`` Rules 13, 15, 16: ``sync_nowait``,
``read_nowait``, ``cache_many_nowait``, ``store(wait=False)``).
"""

from pigeon.store.mailbox.account import (
    DEFAULT_MAX_APPEND,
    MAX_FOLDERS,
    MAX_SUBSCRIPTIONS,
    Account,
    MailStore,
)
from pigeon.store.mailbox.folders import INBOX, NAME_MAX, SEPARATOR
from pigeon.store.mailbox.index import WouldWait, disk_full
from pigeon.store.mailbox.model import (
    Changes,
    ErrorCode,
    MailboxError,
    MailboxInfo,
    MailboxStatus,
    MessageMeta,
)
from pigeon.store.mailbox.view import Mailbox, sync_views

__all__ = [
    "DEFAULT_MAX_APPEND", "INBOX", "MAX_FOLDERS", "MAX_SUBSCRIPTIONS", "NAME_MAX", "SEPARATOR", "Account", "Changes",
    "ErrorCode", "MailStore", "Mailbox", "MailboxError", "MailboxInfo", "MailboxStatus",
    "MessageMeta", "WouldWait", "disk_full", "sync_views",
]
