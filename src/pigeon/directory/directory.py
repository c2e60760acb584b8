"""The user directory: local domains, users, passwords, forwards and aliases, in SQLite.

Rules:
1. The database (``data_dir/directory.sqlite3``, see ``schema``) is the truth; the server and
   the CLI open it independently, whether the other runs or not.
2. Lookups (``accepts``, ``expand``, ``is_local_domain``, ``user_exists``, ``domains``) read an
   in-memory ``Snapshot``, reloaded when ``PRAGMA data_version`` says another connection
   committed, or after this object's own writes. A CLI change is therefore seen by the running
   server at its next lookup, with no restart and no polling; a lookup costs one cheap pragma
   plus dictionary lookups (a few µs, see tests/unit/directory/test_directory_speed.py).
3. Domains are the config's ``domains`` plus the database's; the config's cannot be removed
   here. Users and aliases can only be created in a local domain, and a domain with users or
   aliases cannot be removed (no orphans).
4. Addresses are stored folded (``resolve.fold``); user and alias names are ASCII (RFC 5321),
   targets may be internationalized (RFC 6531).
5. Thread-safety: one lock guards the connection and the snapshot; argon2 work in
   ``verify_password`` / ``add_user`` / ``set_password`` runs outside it. The server calls this
   from its event-loop thread and from a worker thread for passwords.
6. ``verify_password`` spends the same argon2 work for an unknown user as for a known one (no
   user enumeration by timing), and upgrades a hash made with older parameters.
7. Recipient policy and expansion rules are in ``resolve`` (documented there).

What can go wrong: refused changes raise ``DirectoryError`` with an operator-readable message;
SQLite errors become ``DirectoryError`` naming the database; nothing here logs a password.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from pigeon.auth import passwords, schemes
from pigeon.core.address import Address, AddressError, is_valid_domain, parse_address
from pigeon.directory import resolve
from pigeon.directory.aliasfile import parse_aliases
from pigeon.directory.errors import DirectoryError
from pigeon.directory.resolve import Forward, Snapshot, fold
from pigeon.directory.schema import open_database

log = logging.getLogger(__name__)


def _domain_name(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    if not name or name.startswith("[") or not is_valid_domain(name):
        raise DirectoryError(f"{text!r} is not a valid domain name")
    return name


def _parse(text: str, what: str, utf8: bool = True) -> Address:
    try:
        return parse_address(text.strip(), utf8=utf8)
    except AddressError as exc:
        raise DirectoryError(f"{what} {text!r}: {exc}") from None


# The server's recheck interval: a change made with `pigeon user add` (another process) is seen
# within 50 ms; the server's own changes at once (a write drops the snapshot).
SERVER_RECHECK = 0.05


class Directory:
    def __init__(
        self,
        path: Path,
        config_domains: Sequence[str],
        postmaster: str | None,
        recipient_delimiter: str = "+",
        recheck_after: float = 0.0,
    ) -> None:
        self._path = path
        # How long a snapshot is used before the database is asked whether it changed. Every
        # ask is a SQLite read transaction (locks, stat, several getpid calls): the server does
        # five or six lookups per message, so it passes SERVER_RECHECK; 0 asks every time.
        self._recheck_after = recheck_after
        self._checked_at = 0.0
        self._config_domains = frozenset(_domain_name(d) for d in config_domains)
        self._postmaster = _parse(postmaster, "postmaster") if postmaster else None
        self._delimiters = recipient_delimiter
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = open_database(path)
        self._snapshot: Snapshot | None = None
        self._snapshot_version = -1
        self._dummy_hash: str | None = None

    # -- plumbing ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._snapshot = None

    def __enter__(self) -> Directory:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DirectoryError(f"{self._path}: the directory is closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; the snapshot is dropped afterwards."""
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise DirectoryError(f"{self._path}: cannot write: {exc}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise DirectoryError(f"{self._path}: write failed: {exc}") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._snapshot = None

    def _snap(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and self._recheck_after > 0.0:
            if time.monotonic() - self._checked_at < self._recheck_after:
                return snapshot
        with self._lock:
            conn = self._db()
            try:
                version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                if self._snapshot is None or version != self._snapshot_version:
                    self._snapshot = self._load(conn)
                    self._snapshot_version = version
            except sqlite3.Error as exc:
                raise DirectoryError(f"{self._path}: cannot read: {exc}") from None
            self._checked_at = time.monotonic()
            return self._snapshot

    def _load(self, conn: sqlite3.Connection) -> Snapshot:
        conn.execute("BEGIN")
        try:
            db_domains = [row[0] for row in conn.execute("SELECT name FROM domains")]
            users: list[str] = []
            forwards: dict[str, Forward] = {}
            rows = conn.execute("SELECT address, forward, keep_copy FROM users ORDER BY id")
            for address, forward, keep in rows:
                users.append(address)
                targets = self._targets(self._json_list(forward, address), address)
                if targets:
                    forwards[address] = Forward(targets, bool(keep))
            aliases: dict[str, list[Address]] = {}
            rows = conn.execute("SELECT address, target FROM aliases ORDER BY address, position")
            for address, target in rows:
                aliases.setdefault(address, []).extend(self._targets([target], address))
        finally:
            conn.execute("COMMIT")
        postmaster = self._postmaster
        if postmaster is None and users:
            postmaster = resolve.address_of_key(users[0])
        return Snapshot(
            domains=self._config_domains | frozenset(db_domains),
            users=frozenset(users),
            forwards=forwards,
            aliases={k: tuple(v) for k, v in aliases.items()},
            postmaster=postmaster,
        )

    @staticmethod
    def _json_list(text: str, owner: str) -> list[str]:
        try:
            value = json.loads(text)
        except ValueError as exc:
            log.error("directory: the forward of %s is not valid JSON (%s); ignored", owner, exc)
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            log.error("directory: the forward of %s is not a list of addresses; ignored", owner)
            return []
        return value

    @staticmethod
    def _targets(texts: list[str], owner: str) -> tuple[Address, ...]:
        out: list[Address] = []
        for text in texts:
            try:
                out.append(parse_address(text, utf8=True))
            except AddressError as exc:
                log.error("directory: target %r of %s is invalid (%s); ignored", text, owner, exc)
        return tuple(out)

    def _local_address(self, text: str, what: str) -> Address:
        address = _parse(text, what, utf8=True)  # RFC 6531: UTF-8 local parts are legal mailboxes
        if not self.is_local_domain(address.domain):
            domain = address.domain
            raise DirectoryError(f"{domain} is not a local domain (add it with: pigeon domain add {domain})")
        return address

    # -- domains -----------------------------------------------------------------------------

    def add_domain(self, d: str) -> None:
        name = _domain_name(d)
        if name in self._config_domains:
            raise DirectoryError(f"{name} is already a local domain (in the config file)")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone():
                raise DirectoryError(f"{name} is already a local domain")
            conn.execute("INSERT INTO domains (name, created) VALUES (?, ?)", (name, time.time()))
        log.info("directory: domain %s added", name)

    def remove_domain(self, d: str) -> None:
        name = _domain_name(d)
        if name in self._config_domains:
            raise DirectoryError(f"{name} is listed in the config file's domains; remove it there")
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone():
                raise DirectoryError(f"{name} is not a domain of the directory")
            (n_users,) = conn.execute("SELECT COUNT(*) FROM users WHERE domain = ?", (name,)).fetchone()
            (n_aliases,) = conn.execute(
                "SELECT COUNT(DISTINCT address) FROM aliases WHERE domain = ?", (name,)
            ).fetchone()
            if n_users or n_aliases:
                raise DirectoryError(
                    f"{name} still has {n_users} user(s) and {n_aliases} alias(es); remove them first"
                )
            conn.execute("DELETE FROM domains WHERE name = ?", (name,))
        log.info("directory: domain %s removed", name)

    def set_config_domains(
        self, config_domains: Sequence[str], postmaster: str | None, recipient_delimiter: str | None = None
    ) -> None:
        """Adopt a reloaded configuration's domains and postmaster (and delimiter, if given)."""
        domains = frozenset(_domain_name(d) for d in config_domains)
        parsed = _parse(postmaster, "postmaster") if postmaster else None
        with self._lock:
            self._config_domains = domains
            self._postmaster = parsed
            if recipient_delimiter is not None:
                self._delimiters = recipient_delimiter
            self._snapshot = None

    def domains(self) -> list[str]:
        return sorted(self._snap().domains)

    def is_local_domain(self, d: str) -> bool:
        return resolve.is_local(self._snap(), d)

    # -- users -------------------------------------------------------------------------------

    def add_user(self, address: str, password: str) -> None:
        user = self._local_address(address, "user")
        key = fold(user)
        if self.user_exists(user):  # checked before the slow hash; checked again below
            raise DirectoryError(f"user {key} already exists")
        hashed = self._hash(password)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE address = ?", (key,)).fetchone():
                raise DirectoryError(f"user {key} already exists")
            conn.execute(
                "INSERT INTO users (address, domain, password_hash, created) VALUES (?, ?, ?, ?)",
                (key, user.domain, hashed, time.time()),
            )
        log.info("directory: user %s added", key)

    def import_user(self, address: str, stored_hash: str) -> bool:
        """Add a user with a hash brought over as it is (``{SCHEME}data``, ``auth.schemes``);
        False when the user exists already (nothing changed)."""
        user = self._local_address(address, "user")
        key = fold(user)
        try:
            kept = schemes.check_importable(stored_hash)
        except schemes.ForeignHashError as exc:
            raise DirectoryError(f"{key}: {exc}") from None
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE address = ?", (key,)).fetchone():
                return False
            conn.execute(
                "INSERT INTO users (address, domain, password_hash, created) VALUES (?, ?, ?, ?)",
                (key, user.domain, kept, time.time()),
            )
        log.info("directory: user %s imported", key)
        return True

    @staticmethod
    def _hash(password: str) -> str:
        try:
            return passwords.hash_password(password)
        except ValueError as exc:
            raise DirectoryError(str(exc)) from None

    def set_password(self, address: str, password: str) -> None:
        key = fold(_parse(address, "user"))
        hashed = self._hash(password)
        with self._write() as conn:
            cursor = conn.execute("UPDATE users SET password_hash = ? WHERE address = ?", (hashed, key))
            if cursor.rowcount == 0:
                raise DirectoryError(f"no such user: {key}")
        log.info("directory: password of %s changed", key)

    def remove_user(self, address: str) -> None:
        key = fold(_parse(address, "user"))
        with self._write() as conn:
            if conn.execute("DELETE FROM users WHERE address = ?", (key,)).rowcount == 0:
                raise DirectoryError(f"no such user: {key}")
        log.info("directory: user %s removed", key)

    def users(self) -> list[str]:
        return sorted(self._snap().users)

    def user_exists(self, address: Address) -> bool:
        return fold(address) in self._snap().users

    def user_forward(self, address: str) -> tuple[list[str], bool]:
        """The forward targets of a user and whether a copy is kept (``([], False)``: none)."""
        key = fold(_parse(address, "user"))
        snap = self._snap()
        if key not in snap.users:
            raise DirectoryError(f"no such user: {key}")
        forward = snap.forwards.get(key)
        return ([str(t) for t in forward.targets], forward.keep) if forward else ([], False)

    def verify_password(self, address: str, password: str) -> bool:
        return self.check_password(address, password) is not None

    def password_stamp(self, address: str) -> str | None:
        """The stored hash of a user (None: no such user), for the credential cache
        (``auth.credcache`` Rule 3): one indexed read, no argon2."""
        key = self._user_key(address)
        if not key:
            return None
        row = self._hash_row(key)
        return None if row is None else str(row[0])

    def check_password(self, address: str, password: str) -> str | None:
        """Verify (rule 6); the stored hash the password matched (the upgraded one after a
        rehash), None when it does not match or there is no such user."""
        key = self._user_key(address)
        row = self._hash_row(key) if key else None
        if row is None:
            passwords.verify_password(self._dummy(), password)  # same cost as a real check (rule 6)
            return None
        stored = str(row[0])
        if not passwords.verify_password(stored, password):
            return None
        if passwords.needs_rehash(stored):
            return self._rehash(key, stored, password)
        return stored

    @staticmethod
    def _user_key(address: str) -> str:
        try:
            return fold(parse_address(address.strip(), utf8=True))
        except AddressError:
            return ""

    def _hash_row(self, key: str) -> tuple[object, ...] | None:
        with self._lock:
            try:
                query = "SELECT password_hash FROM users WHERE address = ?"
                row: tuple[object, ...] | None = self._db().execute(query, (key,)).fetchone()
                return row
            except sqlite3.Error as exc:
                raise DirectoryError(f"{self._path}: cannot read: {exc}") from None

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = passwords.hash_password(passwords.generate_password())
        return self._dummy_hash

    def _rehash(self, key: str, old: str, password: str) -> str:
        """Upgrade the hash; returns the hash now stored for this password (the old one when
        the upgrade failed or the password was changed meanwhile)."""
        new = passwords.hash_password(password)
        try:
            with self._write() as conn:
                changed = conn.execute(
                    "UPDATE users SET password_hash = ? WHERE address = ? AND password_hash = ?",
                    (new, key, old),
                ).rowcount
            if changed:
                log.info("directory: password hash of %s upgraded to current parameters", key)
                return new
        except DirectoryError as exc:
            log.warning("directory: could not upgrade the password hash of %s: %s", key, exc)
        return old

    def set_forward(self, address: str, targets: list[str], keep: bool) -> None:
        key = fold(_parse(address, "user"))
        parsed = [str(_parse(t, "forward target", utf8=True)) for t in targets]
        parsed = list(dict.fromkeys(parsed))
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE users SET forward = ?, keep_copy = ? WHERE address = ?",
                (json.dumps(parsed), int(keep and bool(parsed)), key),
            ).rowcount
            if changed == 0:
                raise DirectoryError(f"no such user: {key}")
        log.info("directory: forward of %s set to %s (keep=%s)", key, parsed or "none", keep)

    # -- sender identities (submission's sender binding, pigeon.submission.sender) -----------

    def sender_identities(self, user: str) -> list[str]:
        """The extra addresses (or ``@domain``) the user may send as; [] for none or no user."""
        row = self._db().execute("SELECT sender_identities FROM users WHERE address = ?",
                                 (user.lower(),)).fetchone()
        return self._json_list(row[0], user) if row else []

    def set_sender_identities(self, address: str, identities: list[str]) -> None:
        key = fold(_parse(address, "user"))
        parsed: list[str] = []
        for text in identities:
            text = text.strip()
            if text.startswith("@"):
                parsed.append("@" + _domain_name(text[1:]))
            else:
                parsed.append(fold(_parse(text, "identity")))
        parsed = list(dict.fromkeys(parsed))
        with self._write() as conn:
            changed = conn.execute("UPDATE users SET sender_identities = ? WHERE address = ?",
                                   (json.dumps(parsed), key)).rowcount
            if changed == 0:
                raise DirectoryError(f"no such user: {key}")
        log.info("directory: sender identities of %s set to %s", key, parsed or "none")

    # -- aliases -----------------------------------------------------------------------------

    def _alias_name(self, text: str) -> tuple[str, str]:
        """(key, domain) of an alias name: ``local@domain`` or ``@domain`` (catch-all)."""
        text = text.strip()
        if text.startswith("@"):
            domain = _domain_name(text[1:])
            if not self.is_local_domain(domain):
                raise DirectoryError(f"{domain} is not a local domain")
            return "@" + domain, domain
        address = self._local_address(text, "alias")
        return fold(address), address.domain

    def add_alias(self, address: str, targets: list[str]) -> None:
        key, domain = self._alias_name(address)
        if not targets:
            raise DirectoryError("an alias needs at least one target")
        parsed = [str(_parse(t, "alias target", utf8=True)) for t in targets]
        with self._write() as conn:
            (position,) = conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM aliases WHERE address = ?", (key,)
            ).fetchone()
            for target in dict.fromkeys(parsed):
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO aliases (address, domain, target, position) VALUES (?, ?, ?, ?)",
                    (key, domain, target, position),
                ).rowcount
                position += inserted
        log.info("directory: alias %s → %s", key, ", ".join(parsed))

    def remove_alias(self, address: str, target: str | None = None) -> None:
        key, _ = self._alias_name(address)
        with self._write() as conn:
            if target is None:
                removed = conn.execute("DELETE FROM aliases WHERE address = ?", (key,)).rowcount
            else:
                text = str(_parse(target, "alias target", utf8=True))
                cursor = conn.execute("DELETE FROM aliases WHERE address = ? AND target = ?", (key, text))
                removed = cursor.rowcount
            if removed == 0:
                raise DirectoryError(f"no such alias: {key}" + (f" → {target}" if target else ""))
        log.info("directory: alias %s removed%s", key, f" (target {target})" if target else "")

    def aliases(self) -> list[tuple[str, list[str]]]:
        snap = self._snap()
        return [(name, [str(t) for t in snap.aliases[name]]) for name in sorted(snap.aliases)]

    def import_aliases(self, text: str, source: str) -> int:
        """Import an aliases(5) file: each alias it names gets exactly the file's targets.

        All or nothing: any bad line raises ``DirectoryError`` and nothing is written. Returns
        the number of aliases written (a bare name counts once per local domain).
        """
        entries = parse_aliases(text, source)
        local_domains = self.domains()
        plan: dict[str, tuple[str, list[str]]] = {}
        for entry in entries:
            try:
                names = [entry.name] if "@" in entry.name else [f"{entry.name}@{d}" for d in local_domains]
                if not names:
                    raise DirectoryError("there is no local domain for a bare name")
                for name in names:
                    key, domain = self._alias_name(name)
                    slot = plan.setdefault(key, (domain, []))[1]
                    for target in entry.targets:
                        full = target if "@" in target else f"{target}@{domain}"
                        normal = str(_parse(full, "target", utf8=True))
                        if normal not in slot:
                            slot.append(normal)
            except DirectoryError as exc:
                raise DirectoryError(f"{source}:{entry.line}: {exc}") from None
        with self._write() as conn:
            for key, (domain, targets) in plan.items():
                conn.execute("DELETE FROM aliases WHERE address = ?", (key,))
                conn.executemany(
                    "INSERT INTO aliases (address, domain, target, position) VALUES (?, ?, ?, ?)",
                    [(key, domain, target, i) for i, target in enumerate(targets)],
                )
        log.info("directory: imported %d alias(es) from %s", len(plan), source)
        return len(plan)

    # -- recipient policy --------------------------------------------------------------------

    def accepts(self, address: Address) -> bool:
        return resolve.accepts(self._snap(), address, self._delimiters)

    def expand(self, address: Address) -> list[Address]:
        return resolve.expand(self._snap(), address, self._delimiters)

    def postmaster_address(self) -> Address | None:
        return self._snap().postmaster
