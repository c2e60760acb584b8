"""``pigeon backup DEST`` and ``pigeon restore SRC``: a consistent copy of a running server.

Rules:
1. SQLite databases (the directory, each account's index, any other ``*.sqlite3``) are copied
   through SQLite's online backup API from a second connection, never as files: the copy is a
   committed state even while the server writes. Their ``-wal``/``-shm``/``-journal`` files are
   never copied.
2. An account is copied under its index's write lock (``BEGIN IMMEDIATE``, which every index
   writer takes, ``index`` Rule 1): while the Maildir files are linked and the index copied, no
   session can APPEND, EXPUNGE, rename a message (flags) or add a folder, so files and index
   agree (UIDs, flags, UIDVALIDITY). Mail delivered meanwhile lands in ``new/`` outside the
   lock; it is either in the copy without an index row (the next scan gives it a UID) or not
   in the copy at all. The lock is held for one account at a time, for the time it takes to
   link its files (a few µs each).
3. Maildir files are hard-linked into DEST when it is on the same file system (their content
   never changes, ``files`` Rule 3), else copied. Everything else is copied byte for byte:
   queue files are reused in place once removed (``queue.store`` Rule 7) and journal segments
   grow, so a link would change under the backup.
4. The queue is copied in two passes: the records of every state, then the body of each
   record copied (a record whose body is gone was delivered meanwhile and is dropped); then the
   states are listed again and what moved in between is added. The intake journal's segments
   are copied; its recovery reads them as after a crash (a torn tail is cut). A message may be
   both in the backup and delivered after it was taken: restoring it delivers it again, the
   at-least-once promise of the queue.
5. ``pigeon-backup.json`` is written last, after every copied file and directory is flushed
   (``durable.io``): a backup without it is incomplete and ``restore`` refuses it.
6. ``restore SRC`` refuses while a server holds the data directory, and onto a data directory
   that is not empty unless ``--replace``, which first renames the old one aside
   (``<data_dir>.before-restore-<time>``, never deleted by Pigeon). The copy is flushed before
   the command says it is done.
7. Never copied: the server's lock, its control socket, other sockets and FIFOs, ``tmp/``
   contents of Maildirs and of the queue, and folders being deleted (``..deleted-*``).

What can go wrong: OSError and sqlite3.Error become one ``pigeon:`` line, exit status 1; a
backup that stops half-way has no manifest (Rule 5).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import stat
import sys
import time
from pathlib import Path

from pigeon.admin.progress import Progress
from pigeon.config import Config
from pigeon.control.client import server_running
from pigeon.durable.io import REAL, fsync_path, syncfs_reports_errors
from pigeon.queue.store import JOURNAL_DIR
from pigeon.store.mailbox.index import BUSY_TIMEOUT_MS, INDEX_NAME

MANIFEST = "pigeon-backup.json"
FORMAT = 1  # the manifest's format version
_SQLITE_SIDE = ("-wal", "-shm", "-journal")
_SKIP_TOP = frozenset({"pigeon.lock", "control.sock", MANIFEST})
_QUEUE_STATES = ("active", "deferred", "hold", "corrupt")
_QUEUE_SKIP = frozenset({"tmp", "incoming"})


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why."""


# -- copying ---------------------------------------------------------------------------------


def _sqlite_copy(src: Path, dst: Path) -> None:
    """Rule 1."""
    source = sqlite3.connect(src, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def _copy_file(src: Path, dst: Path) -> bool:
    """Byte copy keeping times and mode; False when ``src`` vanished meanwhile."""
    try:
        shutil.copy2(src, dst)
    except FileNotFoundError:
        return False
    return True


def _link_file(src: Path, dst: Path) -> bool:
    try:
        os.link(src, dst)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return _copy_file(src, dst)


def _plain(entry: os.DirEntry[str]) -> bool:
    mode = entry.stat(follow_symlinks=False).st_mode
    return stat.S_ISREG(mode)


def _copy_tree(src: Path, dst: Path, link: bool = False, skip_tmp: bool = False) -> int:
    """Copy a directory tree (Rules 1, 3, 7); returns the number of files."""
    dst.mkdir(mode=0o700, exist_ok=True)
    shutil.copystat(src, dst)
    count = 0
    for entry in os.scandir(src):
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            if entry.name.startswith("..deleted-"):
                continue
            if skip_tmp and entry.name == "tmp":
                target.mkdir(mode=0o700, exist_ok=True)
                continue
            count += _copy_tree(Path(entry.path), target, link, skip_tmp)
        elif entry.name.endswith(".sqlite3"):
            _sqlite_copy(Path(entry.path), target)
            count += 1
        elif entry.name.endswith(tuple(".sqlite3" + s for s in _SQLITE_SIDE)) or not _plain(entry):
            continue
        elif (_link_file if link else _copy_file)(Path(entry.path), target):
            count += 1
    return count


def _copy_account(src: Path, dst: Path) -> int:
    """Rule 2: one account's Maildir and index under the index's write lock."""
    index = src / INDEX_NAME
    if not index.exists():
        return _copy_tree(src, dst, link=True, skip_tmp=True)
    guard = sqlite3.connect(index, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        guard.execute("BEGIN IMMEDIATE")
        try:
            return _copy_tree(src, dst, link=True, skip_tmp=True)  # the index by the API (Rule 1)
        finally:
            guard.execute("ROLLBACK")
    finally:
        guard.close()


def _copy_mail(src: Path, dst: Path, progress: Progress) -> int:
    dst.mkdir(mode=0o700, exist_ok=True)
    count = 0
    for domain in sorted(os.scandir(src), key=lambda e: e.name):
        if not domain.is_dir(follow_symlinks=False):
            continue
        (dst / domain.name).mkdir(mode=0o700, exist_ok=True)
        for user in sorted(os.scandir(domain.path), key=lambda e: e.name):
            if user.is_dir(follow_symlinks=False):
                count += _copy_account(Path(user.path), dst / domain.name / user.name)
                progress.advance()
    return count


def _copy_queue(src: Path, dst: Path) -> int:
    """Rule 4."""
    dst.mkdir(mode=0o700, exist_ok=True)
    for sub in os.scandir(src):
        if sub.is_dir(follow_symlinks=False):
            (dst / sub.name).mkdir(mode=0o700, exist_ok=True)
    taken: dict[str, str] = {}  # queue id -> state it was copied from
    for _ in range(2):
        for state in _QUEUE_STATES:
            folder = src / state
            if not folder.is_dir():
                continue
            for name in sorted(os.listdir(folder)):
                if name in taken or name.startswith("."):
                    continue
                if not _copy_file(folder / name, dst / state / name):
                    continue  # moved or finished meanwhile: the second pass finds it if moved
                body = src / "msg" / name
                if body.exists() and not _copy_file(body, dst / "msg" / name):
                    (dst / state / name).unlink()  # delivered in between: not in the backup
                    continue
                taken[name] = state
    journal = src / JOURNAL_DIR
    if journal.is_dir():
        _copy_tree(journal, dst / JOURNAL_DIR)
    for sub in os.scandir(src):  # anything else the queue keeps (not tmp, not the states)
        if sub.is_dir(follow_symlinks=False) and sub.name not in (*_QUEUE_STATES, "msg", JOURNAL_DIR,
                                                                  *_QUEUE_SKIP):
            _copy_tree(Path(sub.path), dst / sub.name)
    return len(taken)  # the messages in state directories (the journal's are not counted)


def _flush(root: Path) -> None:
    """Rule 5: every file and directory under ``root`` is on disk."""
    if syncfs_reports_errors():
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            REAL.syncfs(fd)
        finally:
            os.close(fd)
        return
    for folder, _dirs, names in os.walk(root):
        for name in names:
            fsync_path(Path(folder) / name)
        REAL.fsync_dir(folder)


# -- commands --------------------------------------------------------------------------------


def backup(data_dir: Path, dest: Path, progress: Progress) -> dict[str, int]:
    if not (data_dir / "directory.sqlite3").exists():
        raise BackupError(f"{data_dir}: no Pigeon data directory here (no directory.sqlite3)")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest}: exists and is not empty")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    counts = {"accounts": 0, "mail_files": 0, "queue_messages": 0, "other_files": 0}
    for entry in sorted(os.scandir(data_dir), key=lambda e: e.name):
        if entry.name in _SKIP_TOP:
            continue
        path, target = Path(entry.path), dest / entry.name
        if entry.name == "mail" and entry.is_dir(follow_symlinks=False):
            counts["mail_files"] += _copy_mail(path, target, progress)
        elif entry.name == "queue" and entry.is_dir(follow_symlinks=False):
            counts["queue_messages"] += _copy_queue(path, target)
        elif entry.is_dir(follow_symlinks=False):
            counts["other_files"] += _copy_tree(path, target)
        elif entry.name.endswith(".sqlite3"):
            _sqlite_copy(path, target)
            counts["other_files"] += 1
        elif not entry.name.endswith(tuple(".sqlite3" + s for s in _SQLITE_SIDE)) and _plain(entry):
            counts["other_files"] += int(_copy_file(path, target))
    mail = dest / "mail"
    counts["accounts"] = sum(1 for d in mail.iterdir() for _ in d.iterdir()) if mail.is_dir() else 0
    _flush(dest)
    manifest = {"format": FORMAT, "created": time.time(), "data_dir": str(data_dir), **counts}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    fsync_path(dest / MANIFEST)
    REAL.fsync_dir(dest)
    return counts


def restore(src: Path, data_dir: Path, replace: bool) -> Path | None:
    manifest = src / MANIFEST
    if not manifest.exists():
        raise BackupError(f"{src}: not a complete Pigeon backup (no {MANIFEST})")
    info = json.loads(manifest.read_text())
    if info.get("format") != FORMAT:
        raise BackupError(f"{src}: backup format {info.get('format')!r} is not {FORMAT}")
    if server_running(data_dir):
        raise BackupError(f"{data_dir}: a server is running on this data directory; stop it first")
    aside: Path | None = None
    if data_dir.exists() and any(data_dir.iterdir()):
        if not replace:
            raise BackupError(f"{data_dir}: not empty (use --replace to move it aside first)")
        aside = data_dir.with_name(f"{data_dir.name}.before-restore-{int(time.time())}")
        os.rename(data_dir, aside)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in os.scandir(src):
        if entry.name == MANIFEST:
            continue
        target = data_dir / entry.name
        if entry.is_dir(follow_symlinks=False):
            _copy_tree(Path(entry.path), target, link=entry.name == "mail")
        elif entry.name.endswith(".sqlite3"):
            _sqlite_copy(Path(entry.path), target)
        elif _plain(entry):
            _copy_file(Path(entry.path), target)
    _flush(data_dir)
    return aside


def cmd_backup(args: argparse.Namespace, config: Config) -> int:
    try:
        with Progress("accounts", None) as progress:
            counts = backup(config.data_dir, Path(args.dest), progress)
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"pigeon: backup: {exc}", file=sys.stderr)
        return 1
    print(f"backup written to {args.dest}: {counts['accounts']} accounts, {counts['mail_files']} mail files, "
          f"{counts['queue_messages']} queued messages")
    return 0


def cmd_restore(args: argparse.Namespace, config: Config) -> int:
    try:
        aside = restore(Path(args.src), config.data_dir, args.replace)
    except (BackupError, OSError, sqlite3.Error, ValueError) as exc:
        print(f"pigeon: restore: {exc}", file=sys.stderr)
        return 1
    if aside is not None:
        print(f"the previous data directory was moved to {aside}")
    print(f"restored {args.src} into {config.data_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("backup", parents=[common],
                              help="a consistent copy of the data directory (the server may run)")
    p.add_argument("dest", help="a new or empty directory")
    p.set_defaults(handler=cmd_backup)
    p = subparsers.add_parser("restore", parents=[common], help="restore a backup onto a stopped server")
    p.add_argument("src")
    p.add_argument("--replace", action="store_true",
                   help="move a non-empty data directory aside first (it is kept, never deleted)")
    p.set_defaults(handler=cmd_restore, creates_data_dir=True)
