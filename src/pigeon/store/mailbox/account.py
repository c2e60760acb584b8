"""The mail store and its accounts: folders (LIST, CREATE, DELETE, RENAME, SUBSCRIBE, STATUS),
APPEND, and SELECT/EXAMINE, which returns a ``Mailbox`` view.

Rules:
1. ``MailStore.account`` creates the user's Maildir (``pigeon.store.maildir`` layout) and, the
   first time the index is created, the default folders Sent, Drafts, Trash, Junk, Archive
   with their RFC 6154 special-use attributes, all subscribed with INBOX. A user who later
   deletes one does not get it back.
2. One ``Account`` per address is kept while it is in use; at most ``max_open_accounts`` idle
   ones keep their index connection open (file descriptors stay bounded). An evicted
   ``Account`` still works: its index reopens on the next call.
3. Names go through ``folders.normalize`` first: a refused name never reaches the file system.
4. CREATE makes missing superior names (RFC 3501 §6.3.3) and ignores one trailing separator.
   At most ``MAX_FOLDERS`` folders, the superior names CREATE and RENAME make counted, and at
   most ``MAX_SUBSCRIPTIONS`` subscriptions (they survive DELETE): ``LIMIT`` beyond, so LIST
   and LSUB have bounded work. DELETE of INBOX is refused; DELETE of a folder with inferiors removes only its own messages
   and the name stays as a \\Noselect node (RFC 3501 §6.3.4). RENAME moves the inferiors
   with it (RFC 3501 §6.3.5) and keeps UIDVALIDITY; RENAME INBOX moves its messages into the
   new folder and leaves INBOX empty.
5. APPEND writes and fsyncs the file before it takes the account lock; under the lock it
   links the file into ``cur/`` and commits the index row (not flushed, index Rule 2); after
   the lock, ``cur/`` and the index's WAL are flushed (``AccountCore.make_durable``: group
   commit, one flush for every APPEND, COPY and EXPUNGE of the account that asks meanwhile)
   before the UID is returned (UIDPLUS APPENDUID, RFC 4315 §3). A crash before those flushes
   may leave a row whose file is not there (the next scan expunges it) or a file without its
   row (the next scan gives it a UID above any handed out, index Rule 6); the client was told
   neither. A flush that fails (EIO) is ``NO``, although the message may stay. The message is octets or a stream (read in
   pieces, never whole: a big IMAP APPEND arrives in a ``temporary_file``); either way more
   than ``max_append`` octets is ``LIMIT`` and nothing is left behind.
   On a full disk (``index.disk_full``) APPEND is ``MailboxError("OVERQUOTA")``, which IMAP
   answers ``NO [OVERQUOTA]`` (RFC 5530 §3; the code RFC 9208 uses for an APPEND that a
   resource limit refuses), and nothing of it is left behind.
6. Deleted folders are renamed to ``..deleted-<unique>`` first (atomic; not a mailbox name,
   ``folders`` Rule 4) and removed afterwards; leftovers are removed when the account opens.

What can go wrong: ``MailboxError`` with an IMAP response code; OSError and sqlite3.Error
propagate (the session answers ``NO``).
"""

from __future__ import annotations

import builtins
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.durable.io import REAL, FileIO, unlink_quietly
from pigeon.store.changes import ChangeBus
from pigeon.store.lineends import ByteSource
from pigeon.store.maildir import MaildirStore
from pigeon.store.mailbox import files, folders, importer, ops
from pigeon.store.mailbox.context import DEFAULT_FOLDERS, SPECIAL_USES, AccountCore
from pigeon.store.mailbox.flags import parse_flags
from pigeon.store.mailbox.importer import ImportedMessage, ImportResult
from pigeon.store.mailbox.index import disk_full, read_boot_id
from pigeon.store.mailbox.model import MailboxError, MailboxInfo, MailboxStatus
from pigeon.store.mailbox.snapshot import WarmSnapshots
from pigeon.store.mailbox.view import Mailbox
from pigeon.store.names import MailboxNameError

log = logging.getLogger(__name__)

DEFAULT_MAX_APPEND = 50 * 1024 * 1024  # octets; the same default as smtp.max_message_size
MAX_FOLDERS = 1000  # per account, parents included; bounds LIST and the per-account directory (LIMIT beyond)
MAX_SUBSCRIPTIONS = 1000  # per account; a subscription outlives its folder (RFC 3501 §6.3.6), so its own cap
MAX_OPEN_ACCOUNTS = 256  # idle accounts keeping an index open (3 fds each with WAL), Rule 2
_TRASH_PREFIX = "..deleted-"
_USE_FOLDED = {u.lower(): u for u in SPECIAL_USES}


class MailStore:
    """Every user's mailboxes under ``mail_root`` (``data_dir/mail``); thread-safe."""

    def __init__(self, mail_root: Path, hostname: str, clock: Clock,
                 max_append: int = DEFAULT_MAX_APPEND,
                 max_open_accounts: int = MAX_OPEN_ACCOUNTS, changes: ChangeBus | None = None,
                 io: FileIO = REAL, boot: Callable[[], int | None] = read_boot_id) -> None:
        self._boot = boot  # index Rule 6: which boot of the machine this is (tests inject it)
        self._maildirs = MaildirStore(mail_root, hostname, io=io)
        self.changes = changes or ChangeBus()  # shared with local delivery by the app
        self._hostname = hostname
        self._clock = clock
        self._max_append = max_append
        self._max_open = max_open_accounts
        self._accounts: OrderedDict[str, Account] = OrderedDict()
        self._lock = threading.Lock()
        self._warm = WarmSnapshots()  # snapshot Rule 6: shared by every account

    def account(self, address: Address) -> Account:
        with self._lock:
            acc = self._accounts.get(address.key)
            if acc is not None:
                self._accounts.move_to_end(address.key)
                return acc
            try:
                maildir = self._maildirs.ensure(address)
            except MailboxNameError as exc:
                raise MailboxError("CANNOT", str(exc)) from None
            acc = Account(AccountCore(address, maildir, self._hostname, self._clock, self._max_append,
                                      self.changes, self._warm, self._maildirs.io,
                                      group=self._maildirs.commits, boot=self._boot))
            acc._open()
            self._accounts[address.key] = acc
            self._evict()
            return acc

    def _evict(self) -> None:
        if len(self._accounts) <= self._max_open:
            return
        for key, acc in list(self._accounts.items()):
            if len(self._accounts) <= self._max_open:
                break
            if acc.idle:
                acc.close()
                self._warm.forget(str(acc._core.maildir))
                del self._accounts[key]

    def close(self) -> None:
        with self._lock:
            for acc in self._accounts.values():
                acc.close()
            self._accounts.clear()


class Account:
    """One user's folders (Rules 3-6)."""

    def __init__(self, core: AccountCore) -> None:
        self._core = core
        self.address = core.address

    @property
    def idle(self) -> bool:
        return self._core.open_views == 0

    def close(self) -> None:
        """Close the index connection (it reopens on the next call)."""
        with self._core.lock:
            self._core.close_index()

    def max_append(self) -> int:
        return self._core.max_append

    def temporary_file(self) -> BinaryIO:
        """An anonymous file in the account's Maildir ``tmp/`` (Rule 5): it never has a name
        where O_TMPFILE exists, and otherwise loses it at once, so it is gone when closed or
        after a crash; it is on the file system of the mail and counts against its space."""
        return tempfile.TemporaryFile(dir=self._core.maildir / "tmp")

    def _open(self) -> None:
        core = self._core
        with core.lock:
            for entry in os.listdir(core.maildir):
                if entry.startswith(_TRASH_PREFIX):
                    shutil.rmtree(core.maildir / entry, onerror=_log_rmtree)  # Rule 6
            if core.index.meta("defaults_created") is not None:
                return
            for name, use in DEFAULT_FOLDERS:  # Rule 1
                if not core.exists(name):
                    core.make_dirs(name)
            with core.index.write() as conn:
                for name, use in DEFAULT_FOLDERS:
                    if core.index.folder_by_name(name) is None:
                        core.index.insert_folder(conn, name, use, core.clock.now())
                    conn.execute("UPDATE folder SET special_use=? WHERE name=?", (use, name))
                conn.executemany("INSERT OR IGNORE INTO subscription(name) VALUES (?)",
                                 [(folders.INBOX,)] + [(n,) for n, _ in DEFAULT_FOLDERS])
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('defaults_created', 1)")

    # -- folders -----------------------------------------------------------------------------

    def _existing(self) -> set[str]:
        core = self._core
        names = {folders.INBOX}
        with os.scandir(core.maildir) as it:
            for entry in it:
                if entry.name.startswith(".") and entry.is_dir():
                    name = folders.decode_dir(entry.name)
                    if name is not None and os.path.isdir(os.path.join(entry.path, "cur")):
                        names.add(name)
        return names

    def list(self) -> list[MailboxInfo]:
        """Every mailbox plus \\Noselect hierarchy nodes, INBOX first, then by name."""
        core = self._core
        existing = self._existing()  # the file system only: no need to hold the lock for it
        with core.lock:
            rows = core.index.folders()
            subs = core.index.subscriptions()
        nodes = set(existing)
        for name in existing:
            nodes.update(folders.parents(name))
        with_children = {p for n in nodes for p in folders.parents(n)}
        default_use = dict(DEFAULT_FOLDERS)
        out = []
        for name in sorted(nodes, key=lambda n: (n != folders.INBOX, n)):
            row = rows.get(name)
            use = row.special_use if row is not None else default_use.get(name)
            out.append(MailboxInfo(name, use if name in existing else None, name in subs,
                                   name in with_children, name in existing))
        return out

    def subscriptions(self) -> builtins.list[str]:
        """Subscribed names, existing or not (LSUB / LIST (SUBSCRIBED) \\NonExistent); added."""
        with self._core.lock:
            return sorted(self._core.index.subscriptions())

    def create(self, name: str, special_use: str | None = None) -> None:
        if name.endswith(folders.SEPARATOR) and len(name) > 1:
            name = name[:-1]  # RFC 3501 §6.3.3: a trailing separator declares intent only
        name = folders.normalize(name)
        use = None
        if special_use is not None:
            use = _USE_FOLDED.get(special_use.lower())
            if use is None:
                raise MailboxError("USEATTR", f"special-use {special_use[:40]!r} is not supported")
        core = self._core
        with core.lock:
            if core.exists(name):
                raise MailboxError("ALREADYEXISTS", f"mailbox {name!r} already exists")
            self._check_room(1 + sum(1 for p in folders.parents(name) if not core.exists(p)))
            self._drop_stale(name)
            for parent in folders.parents(name):
                if not core.exists(parent):
                    self._drop_stale(parent)
                    core.make_dirs(parent)
            core.make_dirs(name)
            row = core.folder(name)
            if use is not None:
                with core.index.write() as conn:
                    conn.execute("UPDATE folder SET special_use=? WHERE id=?", (use, row.id))

    def _check_room(self, new: int) -> None:
        """Rule 4: ``new`` more folders would stay within ``MAX_FOLDERS``."""
        if new and len(self._existing()) + new > MAX_FOLDERS:
            raise MailboxError("LIMIT", f"too many mailboxes (limit {MAX_FOLDERS})")

    def _drop_stale(self, name: str) -> None:
        """A row left behind by a folder removed by another tool must not be reused."""
        try:
            self._core.folder(name)
        except MailboxError:
            pass  # NONEXISTENT is the expected answer; folder() dropped any stale row

    def delete(self, name: str) -> None:
        name = folders.normalize(name)
        if name == folders.INBOX:
            raise MailboxError("CANNOT", "INBOX cannot be deleted")  # RFC 3501 §6.3.4
        core = self._core
        with core.lock:
            row = core.folder(name)
            trash = core.maildir / f"{_TRASH_PREFIX}{core.names.next()}"
            os.rename(core.path(name), trash)  # Rule 6
            with core.index.write() as conn:
                core.index.drop_folder(conn, row.id)
        shutil.rmtree(trash, onerror=_log_rmtree)

    def rename(self, old: str, new: str) -> None:
        old = folders.normalize(old)
        new = folders.normalize(new[:-1] if new.endswith(folders.SEPARATOR) and len(new) > 1 else new)
        core = self._core
        with core.lock:
            if not core.exists(old):
                raise MailboxError("NONEXISTENT", f"mailbox {old!r} does not exist")
            if new == folders.INBOX or core.exists(new):
                raise MailboxError("ALREADYEXISTS", f"mailbox {new!r} already exists")
            if old != folders.INBOX and folders.is_inferior(new, old):
                raise MailboxError("CANNOT", "cannot rename a mailbox into itself")
            if old == folders.INBOX:
                # RFC 3501 §6.3.5: move INBOX's messages to the new name; INBOX stays, empty.
                self.create(new)
                inbox = core.synced(folders.INBOX)
                ops.transfer(core, inbox.id, None, new, move=True)
                core.make_durable(new, folders.INBOX)  # rare: flushed under the lock
                return
            moves = [(old, new)] + [
                (child, folders.normalize(new + child[len(old):]))
                for child in sorted(self._existing()) if folders.is_inferior(child, old)]
            for _, target in moves:
                if core.exists(target):
                    raise MailboxError("ALREADYEXISTS", f"mailbox {target!r} already exists")
            self._check_room(sum(1 for p in folders.parents(new) if not core.exists(p)))
            rows = {src: core.folder(src) for src, _ in moves}
            for _, target in moves:
                self._drop_stale(target)
            for parent in folders.parents(new):
                if not core.exists(parent):
                    core.make_dirs(parent)
                    core.folder(parent)
            for src, target in moves:
                os.rename(core.path(src), core.path(target))
            with core.index.write() as conn:
                for src, target in moves:
                    conn.execute("UPDATE folder SET name=? WHERE id=?", (target, rows[src].id))
                    conn.execute("UPDATE subscription SET name=? WHERE name=?", (target, src))
            files.fsync_cur(core.io, core.path(new))

    def subscribe(self, name: str, on: bool) -> None:
        name = folders.normalize(name)
        core = self._core
        with core.lock, core.index.write() as conn:
            if on:
                if not core.exists(name):  # RFC 3501 §6.3.6 allows this check
                    raise MailboxError("NONEXISTENT", f"mailbox {name!r} does not exist")
                subs = core.index.subscriptions()
                if name not in subs and len(subs) >= MAX_SUBSCRIPTIONS:  # Rule 4
                    raise MailboxError("LIMIT", f"too many subscriptions (limit {MAX_SUBSCRIPTIONS})")
                conn.execute("INSERT OR IGNORE INTO subscription(name) VALUES (?)", (name,))
            else:
                conn.execute("DELETE FROM subscription WHERE name=?", (name,))

    def status(self, name: str) -> MailboxStatus:
        core = self._core
        with core.lock:
            row = core.synced(folders.normalize(name))
            count, size, unseen, deleted, recent = core.index.conn.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(instr(info, 'S') = 0), 0), "
                "coalesce(sum(instr(info, 'T') > 0), 0), coalesce(sum(uid >= ?), 0) "
                "FROM message WHERE folder=?", (row.recent_uid, row.id)).fetchone()
        return MailboxStatus(messages=count, recent=recent, uidnext=row.uidnext,
                             uidvalidity=row.uidvalidity, unseen=unseen, size=size,
                             highestmodseq=row.highestmodseq, deleted=deleted)

    # -- messages ----------------------------------------------------------------------------

    def append(self, name: str, data: bytes | ByteSource, flags: frozenset[str],
               internaldate: float | None, verbatim: bool = False) -> tuple[int, int]:
        """Rule 5: ``(uidvalidity, uid)`` of the committed message; ``data`` is read from where
        it stands to its end. ``verbatim``: keep the octets exactly (BINARY APPEND, ``files``
        Rule 5)."""
        core = self._core
        if isinstance(data, bytes):
            if len(data) > core.max_append:
                raise MailboxError("LIMIT", f"message larger than {core.max_append} octets")
        else:
            data = _Limited(data, core.max_append)
        name = folders.normalize(name)
        letters, keywords = parse_flags(sorted(flags))
        when = core.clock.now() if internaldate is None else internaldate
        with core.lock:
            core.folder(name)  # NONEXISTENT before any write (the session says TRYCREATE)
        path = core.path(name)
        try:
            return self._append(name, path, data, letters, keywords, when, verbatim)
        except (OSError, sqlite3.Error) as exc:
            if not disk_full(exc):
                raise
            log.warning("APPEND to %r of %s refused: the disk is full (%s)", name, self.address, exc)
            raise MailboxError("OVERQUOTA", "The disk is full; delete some mail and try again") from None

    def _append(self, name: str, path: Path, data: bytes | ByteSource, letters: str, keywords: builtins.list[str],
                when: float, verbatim: bool) -> tuple[int, int]:
        core = self._core
        msg = files.write_tmp(core.io, path, core.names, data, when, verbatim)
        try:
            with core.lock:
                row = core.synced(name)
                published = False
                try:
                    with core.index.write(durable=False) as conn, core.own_changes(conn, row.id, name):
                        # Flushed below (Rule 5). ops Rule 1: UIDNEXT and HIGHESTMODSEQ as of this
                        # transaction: another process may have appended since ``synced`` read them.
                        row = core.row_by_id(row.id)
                        files.publish(core.io, msg, path, letters)
                        published = True
                        uid = row.uidnext
                        conn.execute("INSERT INTO message(folder, uid, base, info, keywords, modseq, "
                                     "internaldate, size) VALUES (?,?,?,?,?,?,?,?)",
                                     (row.id, uid, msg.base, letters, " ".join(keywords),
                                      row.highestmodseq + 1, when, msg.size))
                        conn.execute("UPDATE folder SET uidnext=?, highestmodseq=? WHERE id=?",
                                     (uid + 1, row.highestmodseq + 1, row.id))
                except BaseException:
                    # Also when the COMMIT itself failed: a file without its row would be
                    # taken for a new message by the next scan.
                    if published:
                        unlink_quietly(path / "cur" / f"{msg.base}:2,{letters}", core.io)
                    raise
        finally:
            unlink_quietly(msg.tmp, core.io)
        core.make_durable(name)  # Rule 5: cur/ and the index, shared with concurrent writers
        core.notify(name)
        return row.uidvalidity, uid

    def import_messages(self, name: str, messages: Iterable[ImportedMessage],
                        uidvalidity: int | None = None) -> ImportResult:
        """Bring existing mail into ``name``, made (and subscribed) when missing, keeping
        UIDs and UIDVALIDITY where ``importer`` Rule 2 allows."""
        name = folders.normalize(name)
        if not self._core.exists(name):
            self.create(name)
            self.subscribe(name, True)
        return importer.import_into(self._core, name, messages, uidvalidity)

    def select(self, name: str, readonly: bool = False) -> Mailbox:
        core = self._core
        with core.lock:
            row = core.synced(folders.normalize(name))
            return Mailbox(core, row, readonly)


class _Limited:
    """A stream that raises ``LIMIT`` once more than ``limit`` octets were read from it."""

    def __init__(self, stream: ByteSource, limit: int) -> None:
        self._stream = stream
        self._left = limit

    def read(self, n: int = -1, /) -> bytes:
        data = self._stream.read(n)
        self._left -= len(data)
        if self._left < 0:
            raise MailboxError("LIMIT", "message larger than the APPEND limit")
        return data


def _log_rmtree(func: object, path: str, exc_info: object) -> None:
    log.error("could not remove %s of a deleted mailbox: %s", path, exc_info)
