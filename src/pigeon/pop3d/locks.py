"""The maildrop lock registry: one POP3 session per account at a time, across processes.

Rules:
1. RFC 1939 §8 (PASS): the server acquires an exclusive-access lock on the maildrop; a second
   POP3 login for an account whose maildrop is locked gets ``-ERR [IN-USE]`` (RFC 2449 §8.1.1)
   and stays in the AUTHORIZATION state.
2. The lock is POP3's own: IMAP sessions keep working while it is held and see POP3's deletions
   as expunges. Given a ``directory``, it is also an ``flock`` on a file there (one per account,
   named by a hash of the account name, never by the name itself): every process of the server
   (``[pop3] processes``) passes the same directory, so the lock holds across them, and the
   kernel drops it when a process dies. Without one it lives in this process only.
3. Keys are the folded account names (``auth.sasl.account_name``). ``release`` of a key not
   held is a no-op, so a session may release in a ``finally`` without bookkeeping.

What can go wrong: a lock file that cannot be opened (a full disk, permissions) is logged and
the login refused as if the maildrop were in use (never two sessions on one maildrop).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class MaildropLocks:
    def __init__(self, directory: Path | None = None) -> None:
        self._dir = directory
        self._held: dict[str, int] = {}  # account → its lock file's descriptor (-1: none)
        self._mutex = threading.Lock()  # the store runs in worker threads; keep this safe anyway

    def _lock_file(self, account: str) -> int | None:
        """Rule 2: the descriptor holding the file lock, or None when another process holds it."""
        if self._dir is None:
            return -1
        name = hashlib.sha256(account.encode()).hexdigest()[:32] + ".lock"
        try:
            os.makedirs(self._dir, mode=0o700, exist_ok=True)
            fd = os.open(self._dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.error("maildrop lock file for %s: %s; refusing the login", account, exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def acquire(self, account: str) -> bool:
        with self._mutex:
            if account in self._held:
                return False
            fd = self._lock_file(account)
            if fd is None:
                return False
            self._held[account] = fd
            return True

    def release(self, account: str) -> None:
        with self._mutex:
            fd = self._held.pop(account, None)
            if fd is not None and fd >= 0:
                os.close(fd)  # drops the flock

    def held(self, account: str) -> bool:
        with self._mutex:
            return account in self._held
