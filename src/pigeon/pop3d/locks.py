"""The in-process maildrop lock registry: one POP3 session per account at a time.

Rules:
1. RFC 1939 §8 (PASS): the server acquires an exclusive-access lock on the maildrop; a second
   POP3 login for an account whose maildrop is locked gets ``-ERR [IN-USE]`` (RFC 2449 §8.1.1)
   and stays in the AUTHORIZATION state.
2. The lock is POP3's own: IMAP sessions keep working while it is held and see POP3's deletions
   as expunges. It lives in this process (one registry per server, built by the factory, no
   global state); a second Pigeon process on the same data directory is not covered.
3. Keys are the folded account names (``auth.sasl.account_name``). ``release`` of a key not
   held is a no-op, so a session may release in a ``finally`` without bookkeeping.

What can go wrong: nothing raises.
"""

from __future__ import annotations

import threading


class MaildropLocks:
    def __init__(self) -> None:
        self._held: set[str] = set()
        self._mutex = threading.Lock()  # the store runs in worker threads; keep this safe anyway

    def acquire(self, account: str) -> bool:
        with self._mutex:
            if account in self._held:
                return False
            self._held.add(account)
            return True

    def release(self, account: str) -> None:
        with self._mutex:
            self._held.discard(account)

    def held(self, account: str) -> bool:
        with self._mutex:
            return account in self._held
