"""The Maildir mail store: one standard Maildir per user under ``data_dir/mail``.

Layout: ``<root>/<domain>/<local>/{cur,new,tmp}`` with Maildir++ sub-folders (``.Sent/`` …) inside
the user's directory later. Directory names are the folded address, %-encoded (see ``names``).

Rules:
1. No address can name a path outside the root: names come only from ``names.mailbox_components``.
2. Delivery follows http://cr.yp.to/proto/maildir.html: write ``tmp/<unique>`` (created with
   O_EXCL, mode 0600), fsync the file, ``link()`` it to ``new/<unique>,S=…,W=…`` (link never
   overwrites; a clash picks a new name), unlink the tmp name, then fsync ``new/``. Only then is
   the message delivered. On Linux the link and unlink are one ``renameat2(RENAME_NOREPLACE)``,
   which never overwrites either; file systems without hard links fall back to ``rename()``.
   The file's fsync: its bytes are on disk before its name appears in ``new/`` (a reader never
   finds a short message there after a crash); ``new/``'s fsync: the name is durable before the
   recipient counts as delivered and the queue forgets the message.
3. CRLF line ends become LF while copying (what mutt, Dovecot and Postfix write); ``S=`` is the
   size on disk, ``W=`` the size with CRLF line ends. The copy streams in 64 KiB chunks, so memory
   is bounded for any message size.
4. Directories are created 0700, files 0600 (virtual users under one system account). A newly
   created directory is made durable by fsyncing its parent (``durable.io.makedirs_durable``):
   a file made durable inside it must be reachable after a crash.
5. ``deliver_shared`` (blocking, for worker threads) and ``deliver_async`` (the same in one
   worker-thread call) share the fsync of ``new/`` with every concurrent delivery into the same
   Maildir (group commit, ``durable.commit``, ``flush_blocking``): one thread hop per delivery.
   Every system call goes through the store's IO seam (``durable.io``).
6. A failed delivery leaves nothing in ``new/`` and removes its tmp file.
7. ``ensure`` remembers the Maildirs it has seen complete, so a delivery does not stat three
   directories each time; a delivery that fails because a directory vanished forgets it.
9. ``folder`` (``"Junk"``, core.envelope rule 5) delivers into that Maildir++ folder
   (``.Junk/``, with its ``maildirfolder`` marker) instead of INBOX, creating it when missing;
   the IMAP side lists ``Junk`` with its RFC 6154 ``\\Junk`` attribute (store.mailbox rule 1).
8. ``write_tmp`` / ``link_new`` split Rule 2 into the steps around its two flushes, for the
   fast path (``delivery.fastlane``): the writes run on the caller's thread and the flushes are
   group-committed by the caller; the order (file fsync, link, ``new/`` fsync) is the same.

What can go wrong: OSError (ENOSPC, EDQUOT, EACCES, EIO, a missing directory) propagates to the
caller, which defers the message; ``MailboxNameError`` for an address that cannot be mapped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pigeon.core.address import Address
from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import DirSync
from pigeon.durable.io import REAL, FileIO, FileWriter, makedirs_durable, unlink_quietly
from pigeon.store.lineends import CrlfToLf, copy_crlf_to_lf
from pigeon.store.names import UniqueNames, final_name, mailbox_components

log = logging.getLogger(__name__)

DIR_MODE = 0o700  # Rule 4: only the mail system's account reads mailboxes
FILE_MODE = 0o600
# The delivered file's write buffer: a typical message (tens of KiB) in one or two writes; one
# buffer per delivery in flight (the delivery threads), so memory stays bounded.
WRITE_BUFFER = 64 * 1024
MAX_NAME_CLASHES = 8  # link() EEXIST retries; one clash already means two writers share a counter

# errno values from link() that mean "this file system has no hard links": fall back to rename.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV})

SUBDIRS = ("tmp", "new", "cur")
# Rule 7: Maildirs remembered by address, a few per user delivered to lately (INBOX, Junk); past
# this many the memory is cleared and each is looked up again (one user_root and three stats).
MAX_READY = 4096


class MaildirStore:
    """Users' Maildirs under ``root``; safe to use from several threads at once."""

    def __init__(self, root: Path, hostname: str, *, commits: GroupCommit | None = None,
                 io: FileIO = REAL) -> None:
        self.root = Path(root)
        self.hostname = hostname
        self._names = UniqueNames(hostname)
        # Rule 5: the app passes the queue's engine, so that the fast lane's flushes and these
        # share their runs; alone (tools, tests) the store has its own.
        self.commits = commits if commits is not None else GroupCommit(io, name="pigeon-maildir-sync")
        self.io = self.commits.io
        self._complete: set[Path] = set()  # Rule 7: Maildirs known to have cur/ new/ tmp/
        self._ready: dict[tuple[str, str | None], Path] = {}  # Rule 7: (address key, folder) -> one of them
        self._dirs: dict[Path, tuple[Path, Path]] = {}  # Rule 7: a Maildir's tmp/ and new/

    @property
    def dir_fsyncs(self) -> int:
        """Directory fsyncs of the engine under ``root`` so far (group commit makes it <
        deliveries)."""
        prefix = str(self.root) + os.sep
        return sum(n for key, n in list(self.commits.runs.items())
                   if isinstance(key, tuple) and key[0] == "dir" and str(key[1]).startswith(prefix))

    # -- paths ---------------------------------------------------------------------------------

    def user_root(self, address: Address) -> Path:
        """The user's Maildir (INBOX). Rule 1: built from encoded components only."""
        domain_dir, local_dir = mailbox_components(address)
        return self.root / domain_dir / local_dir

    def ensure(self, address: Address, folder: str | None = None) -> Path:
        """Create ``cur/ new/ tmp/`` (0700) if missing; returns the Maildir path (of
        ``folder``, a plain Maildir++ name such as ``Junk``, when given: Rule 9)."""
        ready = self._ready.get((address.key, folder))
        if ready is not None:
            return ready  # Rule 7: no path built, no stat
        maildir = self.user_root(address)
        if folder is not None:
            if not folder.isalnum():
                raise ValueError(f"not a plain folder name: {folder!r}")
            maildir = maildir / ("." + folder)
        if maildir in self._complete:
            self._remember(address, folder, maildir)
            return maildir
        if not all(os.path.isdir(maildir / sub) for sub in SUBDIRS):
            for sub in SUBDIRS:
                makedirs_durable(maildir / sub, DIR_MODE, self.io)  # Rule 4
            if folder is not None:
                marker = maildir / "maildirfolder"  # Maildir++: this directory is a folder
                self.io.close(self.io.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        self._complete.add(maildir)
        self._remember(address, folder, maildir)
        return maildir

    def _remember(self, address: Address, folder: str | None, maildir: Path) -> None:
        if len(self._ready) >= MAX_READY:
            self._ready = {}  # Rule 7: bounded; the next delivery to each looks it up again
        self._ready[(address.key, folder)] = maildir

    def _subdirs(self, maildir: Path) -> tuple[Path, Path]:
        """``tmp/`` and ``new/`` of ``maildir``, made once (Rule 7's memory, as bounded)."""
        dirs = self._dirs.get(maildir)
        if dirs is None:
            if len(self._dirs) >= MAX_READY:
                self._dirs = {}
            dirs = self._dirs[maildir] = (maildir / "tmp", maildir / "new")
        return dirs

    def _forget(self, maildir: Path) -> None:
        """Rule 7: ``maildir`` was removed behind our back; the next delivery recreates it."""
        self._complete.discard(maildir)
        self._ready = {k: v for k, v in list(self._ready.items()) if v != maildir}  # a copy: threads add

    def list_new(self, address: Address) -> list[Path]:
        return _list_files(self.user_root(address) / "new")

    def list_cur(self, address: Address) -> list[Path]:
        return _list_files(self.user_root(address) / "cur")

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self, address: Address, prefix: bytes, body: BinaryIO) -> Path:
        """Deliver into the user's INBOX and return the path in ``new/`` (Rules 2, 3, 6).

        The Maildir must exist (call ``ensure`` first). Blocking; fsyncs ``new/`` itself.
        """
        final = self._write_and_link(self.user_root(address), prefix, body)
        try:
            self.io.fsync_dir(final.parent)  # Rule 2
        except BaseException:
            unlink_quietly(final, self.io)  # Rule 6
            raise
        return final

    def deliver_shared(self, address: Address, prefix: bytes, body: BinaryIO, folder: str | None = None) -> Path:
        """Like ``deliver``, with the ``new/`` fsync shared among concurrent threads (Rule 5).

        Blocking: call it from a worker thread. Creates the Maildir if needed (``ensure``).
        """
        maildir = self.ensure(address, folder)
        try:
            final = self._write_and_link(maildir, prefix, body)
        except FileNotFoundError:
            self._forget(maildir)  # Rule 7: removed behind our back; the retry recreates it
            raise
        try:
            self.commits.flush_blocking(DirSync(final.parent))  # Rules 2 and 5
        except BaseException:
            # Rule 6: not durable, so not delivered; the retry must not find a duplicate.
            unlink_quietly(final, self.io)
            raise
        return final

    async def deliver_async(self, address: Address, prefix: bytes, body: BinaryIO) -> Path:
        """``deliver_shared`` in a worker thread (Rule 5)."""
        return await asyncio.to_thread(self.deliver_shared, address, prefix, body)

    # -- delivery in steps, for the fast path (Rule 8) ------------------------------------------

    def write_tmp(self, address: Address, prefix: bytes, body: bytes, folder: str | None = None) -> PendingFile:
        """Step 1 of a delivery from memory: ``tmp/<unique>`` written, not yet flushed. The
        caller has it flushed and closed (``release`` hands over the descriptor), then calls
        ``link_new``."""
        maildir = self.ensure(address, folder)
        try:
            base, tmp, fd = self._create_tmp(self._subdirs(maildir)[0])
        except FileNotFoundError:
            self._forget(maildir)  # Rule 7
            raise
        try:
            conv = CrlfToLf()
            parts = [conv.feed(prefix), conv.feed(body), conv.finish()]
            _write_all(self.io, fd, parts)
        except BaseException:
            self.io.close(fd)
            unlink_quietly(tmp, self.io)
            raise
        return PendingFile(maildir, base, tmp, fd, conv.size, conv.crlf_size, self.io)

    def link_new(self, pending: PendingFile) -> Path:
        """Step 2, after the file's fsync: link it into ``new/`` (Rule 2). The caller then
        fsyncs ``new/`` before the message counts as delivered."""
        try:
            return self._link_into_new(self._subdirs(pending.maildir)[1], pending.tmp, pending.base,
                                       pending.size, pending.crlf_size)
        except BaseException:
            unlink_quietly(pending.tmp, self.io)
            raise

    def _write_and_link(self, maildir: Path, prefix: bytes, body: BinaryIO) -> Path:
        base, tmp, fd = self._create_tmp(maildir / "tmp")
        try:
            try:
                out = FileWriter(self.io, fd, WRITE_BUFFER)
                conv = copy_crlf_to_lf(prefix, body, out.write)
                out.flush()
                self.io.fsync(fd)  # Rule 2: the bytes before the name
            finally:
                self.io.close(fd)
            return self._link_into_new(maildir / "new", tmp, base, conv.size, conv.crlf_size)
        except BaseException:
            unlink_quietly(tmp, self.io)
            raise

    def _create_tmp(self, tmp_dir: Path) -> tuple[str, Path, int]:
        for _ in range(MAX_NAME_CLASHES):
            base = self._names.next()
            path = tmp_dir / base
            try:
                fd = self.io.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileExistsError:
                log.warning("maildir tmp name clash %s, choosing another", path)
                continue
            return base, path, fd
        raise OSError(errno.EEXIST, "could not find a unique tmp name", str(tmp_dir))

    def _link_into_new(self, new_dir: Path, tmp: Path, base: str, size: int, crlf_size: int) -> Path:
        name_base = base
        for _ in range(MAX_NAME_CLASHES):
            final = new_dir / final_name(name_base, size, crlf_size)
            try:
                if self.io.rename_noreplace(tmp, final):
                    return final  # one call does link() and unlink(): never overwrites (Rule 2)
                self.io.link(tmp, final)
            except FileExistsError:
                log.warning("maildir name clash %s, choosing another", final)
                name_base = self._names.next()
                continue
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                log.info("no hard links in %s (%s); delivering with rename", new_dir, exc)
                if final.exists():
                    name_base = self._names.next()
                    continue
                self.io.rename(tmp, final)
                return final
            unlink_quietly(tmp, self.io)  # a leftover tmp name is harmless; readers clean tmp/ after 36 h
            return final
        raise OSError(errno.EEXIST, "could not find a unique name in new/", str(new_dir))


@dataclass(slots=True)
class PendingFile:
    """A delivery between ``write_tmp`` and ``link_new``."""

    maildir: Path
    base: str
    tmp: Path
    fd: int  # open for writing until flushed and closed
    size: int
    crlf_size: int
    io: FileIO

    def release(self) -> int:
        """Hand the open descriptor over to whoever flushes and closes it (the engine's
        ``FileSync(fd, close=True)``); this file no longer closes it."""
        fd, self.fd = self.fd, -1
        return fd

    def close(self) -> None:
        """Close without an fsync: the caller flushes the whole file system (``FsSync``)
        before it links the file into ``new/``."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            self.io.close(fd)

    def discard(self) -> None:
        """Give up: close if still open, remove the tmp file (Rule 6)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                self.io.close(fd)
            except OSError:
                pass
        unlink_quietly(self.tmp, self.io)


def _write_all(io: FileIO, fd: int, parts: list[bytes]) -> None:
    views = [memoryview(p) for p in parts if p]
    while views:
        n = io.writev(fd, views)
        if n <= 0:
            raise OSError(errno.EIO, "write made no progress")
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


def _list_files(directory: Path) -> list[Path]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(directory / n for n in names if not n.startswith("."))
