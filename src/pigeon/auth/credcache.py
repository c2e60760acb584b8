"""The verified-credential cache: a login whose password was verified recently skips argon2.

Why (docs/security.md, "Login cost and the credential cache"): one argon2id verification with
the library's parameters costs ~130 ms of CPU and 64 MiB; phones and desktop clients log in
all day, so every login paying it caps a 2-core machine near 7 logins per second. Dovecot's
answer is its auth cache; this is Pigeon's, with the properties the issue asks for.

Rules:
1. An entry is keyed by the folded account and holds ``HMAC-SHA256(secret, account NUL
   password)`` with a secret drawn per process at start (``secrets.token_bytes``), never
   written anywhere: neither the password nor a hash that outlives the process is kept.
2. An entry also holds the *stamp* of the stored credential it was verified against (the
   SHA-256 of the stored argon2id string) and expires ``ttl`` seconds after it was made. A
   login hits the cache only when the account's entry has the same HMAC (so a wrong password
   never matches, ``hmac.compare_digest``), the same stamp as the directory has *now*, and
   has not expired.
3. The stamp is read from the directory at every login (one indexed SQLite read), so a
   password change or the removal of the user, made by this process, another one or the CLI,
   takes effect at the very next login: the stamp differs (or is gone), the entry is dropped
   and the password is verified in full.
4. Only successes are cached; a failure never creates, refreshes or drops an entry (a wrong
   guess cannot push the real user's login back onto argon2).
5. The brute-force throttle runs before the cache is consulted (``sasl.Authenticator.verify``
   checks it before calling ``verify_password``): a blocked client learns nothing, and a hit
   counts as a success for the throttle like any other.
6. Bounded: at most ``max_entries`` accounts (least recently used dropped first); ``ttl`` 0
   turns the cache off.
7. Thread-safe: logins verify in worker threads; one lock guards the table.

What can go wrong: the directory raising (``DirectoryError``) propagates to the
``Authenticator``, which answers UNAVAILABLE. Exposure to a memory disclosure: whoever reads
this process's memory gets the secret and the HMACs, and can test password guesses offline at
HMAC speed (far faster than argon2) for the accounts that logged in within ``ttl`` — the same
process holds each plaintext password for the moment of every login anyway; docs/security.md
weighs it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from pigeon.core.clock import Clock

#: Rule 6. Dovecot's auth_cache_ttl defaults to 1 hour; a shorter one bounds how long a
#: stolen memory image is worth brute-forcing and how long a removed-then-restored hash lingers.
DEFAULT_TTL = 600.0
#: Rule 6: entries are ~200 octets, so 10,000 accounts cost ~2 MB (Dovecot: auth_cache_size).
DEFAULT_MAX_ENTRIES = 10_000
SECRET_BYTES = 32  # HMAC-SHA256 key: its block-size-safe length (RFC 2104 §3: at least L=32)


class StampedVerifier(Protocol):
    """What the cache needs of the directory (``pigeon.directory.Directory`` satisfies it)."""

    def password_stamp(self, address: str) -> str | None:
        """The account's stored credential (any string that changes with the password), or
        None when there is no such user. Cheap: no argon2."""
        ...

    def check_password(self, address: str, password: str) -> str | None:
        """Full verification: the stored credential the password matched, None when not."""
        ...


@dataclass(slots=True)
class _Entry:
    mac: bytes
    stamp: bytes
    expires: float


class CachedVerifier:
    """A ``PasswordVerifier`` (``auth.sasl``) over a ``StampedVerifier`` with the cache (Rules 1-7)."""

    def __init__(self, directory: StampedVerifier, clock: Clock, ttl: float = DEFAULT_TTL,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._directory = directory
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._secret = secrets.token_bytes(SECRET_BYTES)  # Rule 1: per process, never stored
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def verify_password(self, address: str, password: str) -> bool:
        """``address`` is the folded account (``sasl.account_name``)."""
        if self._ttl <= 0:
            return self._directory.check_password(address, password) is not None
        stamp = _digest(self._directory.password_stamp(address))  # Rule 3: read at every login
        mac = self._mac(address, password)
        now = self._clock.now()
        with self._lock:
            entry = self._entries.get(address)
            if entry is not None:
                if (hmac.compare_digest(entry.mac, mac) and stamp is not None
                        and hmac.compare_digest(entry.stamp, stamp) and now < entry.expires):
                    self._entries.move_to_end(address)
                    self.hits += 1
                    return True
                if stamp is None or entry.stamp != stamp or now >= entry.expires:
                    del self._entries[address]  # Rule 3: a changed or removed credential
            self.misses += 1
        matched = self._directory.check_password(address, password)
        if matched is None:
            return False  # Rule 4
        with self._lock:
            self._entries[address] = _Entry(mac, hashlib.sha256(matched.encode()).digest(),
                                            self._clock.now() + self._ttl)
            self._entries.move_to_end(address)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)  # Rule 6
        return True

    def forget(self, address: str) -> None:
        """Drop an account's entry (an explicit change made through this process)."""
        with self._lock:
            self._entries.pop(address, None)

    def _mac(self, address: str, password: str) -> bytes:
        msg = address.encode("utf-8") + b"\x00" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()


def _digest(stamp: str | None) -> bytes | None:
    return None if stamp is None else hashlib.sha256(stamp.encode()).digest()
