"""Fault injection through the IO seam, for tests: ``FaultyIO`` and what a crash leaves behind.

``FaultyIO`` wraps a ``FileIO`` (``REAL`` by default) and counts every call per operation
(``"fsync"``, ``"rename"``, ...). A test asks for a fault at the Nth call of an operation,
optionally only for paths containing a given text:

* ``fail(op, nth=, error=errno.ENOSPC)`` — that call raises ``OSError(error)`` (``times``
  calls in a row; ``None``: every later one);
* ``short(op, nth=)`` — that write writes half of its bytes and says so (what a write does
  when the disk fills in its middle);
* ``crash(op, nth=)`` — that call raises ``Crash`` and so does every later call that would
  change the disk: the process is dead from there on, whatever its handlers try to undo.

With ``root``, it also keeps a model of what is *durable* under ``root``: the state at
construction, then each file's bytes as of its last ``fsync``/``fdatasync``, each directory's
names as of its last ``fsync``, everything as of the last ``syncfs``. ``crash_images(dest)``
then writes the states a crash at the current point may leave on the disk: for each
directory whose names changed since its last flush, and each file whose bytes did, either
what is durable or what the page cache holds now, in every combination (or, past
``MAX_ALL_UNITS`` such units, all of one, all of the other, and each one flipped alone).
A real disk may keep any such mix: that is what finds a flush that comes too late. Each
directory counts on its own, so a rename from one directory into another may, until both
are flushed, leave the name in either, both or neither (as on a file system without a
journal, where fsck then puts the file in ``lost+found``).

Rules:
1. ``Crash`` is a ``BaseException``: no ``except Exception`` or ``except OSError`` handler runs
   its undo, as none would run in a killed process; after it, calls that would change the
   disk raise ``Crash`` again, and reads, ``close`` and ``statvfs`` still work. ``halt()``
   is for tearing the dead process down: from then on those calls change nothing and
   pretend to succeed, so that shutdown code runs to its end without touching the disk.
2. Calls from threads whose name starts with one of ``ignore_threads`` (for crash tests, the
   journal's spare maker, whose timing is not the test's: ``SPARE_THREAD``) are neither counted
   nor faulted; they are modelled. A path is what the descriptor's file is called now
   (``/proc/self/fd``), so ``match`` follows renames.
3. The model assumes inode numbers are not reused while a test runs (tmpfs and ext4 hand out
   new ones); it reads a flushed file's bytes through ``/proc/self/fd`` (Linux).
4. The flush is modelled from what was there *before* the real call: bytes written while it
   runs are not counted as durable.
5. ``NoFlushIO`` is ``REAL`` with the flushes left out (they return at once, as after
   success): for tests whose model of durability is ``FaultyIO``'s, not the disk's, so that
   they do not wait for the device.

What can go wrong: ``crash_images`` raises ``OSError`` when it cannot write an image.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pigeon.durable.io import REAL, Buffer, FileIO, OsFileIO, StrPath

MAX_ALL_UNITS = 6  # up to 2**6 = 64 images per crash point; past that, 2 + 2n of them

_MUTATING = frozenset({"write", "writev", "pwrite", "pwritev", "ftruncate", "fsync", "fdatasync", "syncfs",
                       "fsync_dir", "rename", "rename_noreplace", "link", "unlink", "mkdir"})


class Crash(BaseException):
    """A simulated crash (Rule 1)."""


class NoFlushIO(OsFileIO):
    """Rule 5: the real calls, but no flush reaches the device."""

    def fsync(self, fd: int) -> None:
        os.fstat(fd)  # a closed descriptor still fails, as a real fsync would

    def fdatasync(self, fd: int) -> None:
        os.fstat(fd)

    def syncfs(self, fd: int) -> None:
        os.fstat(fd)

    def fsync_dir(self, path: StrPath) -> None:
        if not os.path.isdir(path):
            raise NotADirectoryError(20, "not a directory", str(path))


SPARE_THREAD = "pigeon-journal-spare"
_SHORT = -1  # a _Fault's error for a short write
_GO, _HALF, _SKIP = 0, 1, 2  # what _enter tells a call: do it, write half, do nothing (halted)


@dataclass
class _Fault:
    op: str
    nth: int
    error: int | None  # None: a crash; _SHORT: a short write
    times: int | None
    match: str | None
    seen: int = 0


class FaultyIO:
    """A ``FileIO`` that fails where the test says (module docstring)."""

    def __init__(self, real: FileIO = REAL, *, root: Path | None = None,
                 ignore_threads: Sequence[str] = ()) -> None:
        self.real = real
        self.calls: Counter[str] = Counter()
        self.trace: list[tuple[str, str]] = []  # (op, path) of every counted call, in order
        self.crashed = False
        self.halted = False
        self.free: int | None = None  # bytes ``statvfs`` reports free (None: the real figure)
        self._faults: list[_Fault] = []
        self._paths: dict[int, str] = {}
        self._ignore = tuple(ignore_threads)
        self._lock = threading.Lock()
        self.model = _Model(root) if root is not None else None

    # -- what the test asks for ------------------------------------------------------------------

    def fail(self, op: str, *, nth: int = 1, error: int = errno.EIO, times: int | None = 1,
             match: str | None = None) -> None:
        self._faults.append(_Fault(op, nth, error, times, match))

    def crash(self, op: str, *, nth: int = 1, match: str | None = None) -> None:
        self._faults.append(_Fault(op, nth, None, 1, match))

    def short(self, op: str, *, nth: int = 1, times: int | None = 1, match: str | None = None) -> None:
        if op not in ("write", "writev", "pwrite", "pwritev"):
            raise ValueError(f"{op} does not write")
        self._faults.append(_Fault(op, nth, _SHORT, times, match))

    def halt(self) -> None:
        """Rule 1: after the crash, let the dead process shut down without touching the disk."""
        self.halted = True

    def clear(self) -> None:
        """Forget the faults not yet fired (a crash already fired stays: Rule 1)."""
        self._faults = []

    def crash_images(self, dest: Path) -> list[Path]:
        if self.model is None:
            raise ValueError("FaultyIO(root=...) models durability; this one was made without")
        return self.model.images(dest)

    # -- the gate every call passes ------------------------------------------------------------------

    def _enter(self, op: str, where: str) -> int:
        """Count the call, fire a fault; what the call is to do."""
        ignored = self._ignore and threading.current_thread().name.startswith(self._ignore)
        with self._lock:
            if self.crashed and op in _MUTATING:
                if self.halted:
                    return _SKIP
                raise Crash(f"{op} after the crash")
            if ignored:
                return _GO
            self.calls[op] += 1
            self.trace.append((op, where))
            short = _GO
            for fault in self._faults:
                if fault.op != op or (fault.match is not None and fault.match not in where):
                    continue
                fault.seen += 1
                if fault.seen < fault.nth or (fault.times is not None and fault.seen >= fault.nth + fault.times):
                    continue
                if fault.error is None:
                    self.crashed = True
                    raise Crash(f"crash at {op} #{fault.seen} ({where})")
                if fault.error == _SHORT:
                    short = _HALF
                    continue
                raise OSError(fault.error, os.strerror(fault.error), where)
            return short

    def _fd(self, fd: int) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")  # Rule 2: its name now
        except OSError:
            return self._paths.get(fd, f"fd {fd}")

    # -- FileIO -------------------------------------------------------------------------------------

    def open(self, path: StrPath, flags: int, mode: int = 0o600) -> int:
        creates = flags & (os.O_CREAT | os.O_TRUNC)
        self._enter("open", str(path))
        if creates and self.crashed:
            raise Crash("open after the crash")  # even halted: there is no descriptor to give
        fd = self.real.open(path, flags, mode)
        self._paths[fd] = str(path)
        return fd

    def close(self, fd: int) -> None:
        self._enter("close", self._fd(fd))
        self._paths.pop(fd, None)
        self.real.close(fd)

    def write(self, fd: int, data: Buffer) -> int:
        how = self._enter("write", self._fd(fd))
        if how == _SKIP:
            return len(memoryview(data))
        if how == _HALF:
            return self.real.write(fd, _half([data]))
        return self.real.write(fd, data)

    def writev(self, fd: int, buffers: Sequence[Buffer]) -> int:
        how = self._enter("writev", self._fd(fd))
        if how == _SKIP:
            return sum(len(memoryview(b)) for b in buffers)
        if how == _HALF:
            return self.real.write(fd, _half(buffers))
        return self.real.writev(fd, buffers)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        how = self._enter("pwrite", self._fd(fd))
        if how == _SKIP:
            return len(memoryview(data))
        if how == _HALF:
            return self.real.pwrite(fd, _half([data]), offset)
        return self.real.pwrite(fd, data, offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        how = self._enter("pwritev", self._fd(fd))
        if how == _SKIP:
            return sum(len(memoryview(b)) for b in buffers)
        if how == _HALF:
            return self.real.pwrite(fd, _half(buffers), offset)
        return self.real.pwritev(fd, buffers, offset)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        self._enter("pread", self._fd(fd))
        return self.real.pread(fd, length, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        if self._enter("ftruncate", self._fd(fd)) == _SKIP:
            return
        self.real.ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        if self._enter("fsync", self._fd(fd)) == _SKIP:
            return
        seen = self.model.before_fd(fd) if self.model else None
        self.real.fsync(fd)
        if self.model:
            self.model.commit(seen)

    def fdatasync(self, fd: int) -> None:
        if self._enter("fdatasync", self._fd(fd)) == _SKIP:
            return
        seen = self.model.before_fd(fd) if self.model else None
        self.real.fdatasync(fd)
        if self.model:
            self.model.commit(seen)

    def syncfs(self, fd: int) -> None:
        if self._enter("syncfs", self._fd(fd)) == _SKIP:
            return
        seen = self.model.before_all() if self.model else None
        self.real.syncfs(fd)
        if self.model:
            self.model.commit(seen)

    def fsync_dir(self, path: StrPath) -> None:
        if self._enter("fsync_dir", str(path)) == _SKIP:
            return
        seen = self.model.before_dir(Path(path)) if self.model else None
        self.real.fsync_dir(path)
        if self.model:
            self.model.commit(seen)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        if self._enter("rename", f"{src} -> {dst}") == _SKIP:
            return
        self.real.rename(src, dst)

    def rename_noreplace(self, src: StrPath, dst: StrPath) -> bool:
        if self._enter("rename_noreplace", f"{src} -> {dst}") == _SKIP:
            return True
        return self.real.rename_noreplace(src, dst)

    def link(self, src: StrPath, dst: StrPath) -> None:
        if self._enter("link", f"{src} -> {dst}") == _SKIP:
            return
        self.real.link(src, dst)

    def unlink(self, path: StrPath) -> None:
        if self._enter("unlink", str(path)) == _SKIP:
            return
        self.real.unlink(path)

    def mkdir(self, path: StrPath, mode: int = 0o700) -> None:
        if self._enter("mkdir", str(path)) == _SKIP:
            return
        self.real.mkdir(path, mode)

    def statvfs(self, path: StrPath) -> os.statvfs_result:
        self._enter("statvfs", str(path))
        st = self.real.statvfs(path)
        if self.free is None:
            return st
        blocks = self.free // st.f_frsize
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, blocks, blocks, st.f_files,
                                  st.f_ffree, st.f_favail, st.f_flag, st.f_namemax))


# -- the model of what is durable -------------------------------------------------------------------

Content = tuple[bytes, int]  # the bytes without their trailing zeros, and the size
Entries = dict[str, int]  # name -> inode
Seen = tuple[dict[int, Entries], dict[int, Content], dict[int, bool]]  # dirs, files, is-dir


class _Model:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self.root_ino = os.stat(root).st_ino
        dirs, files, kinds = self._walk()
        self.dirs: dict[int, Entries] = dirs
        self.files: dict[int, Content] = files
        self.is_dir: dict[int, bool] = kinds

    def _walk(self) -> Seen:
        dirs: dict[int, Entries] = {}
        files: dict[int, Content] = {}
        kinds: dict[int, bool] = {}
        stack = [self.root]
        while stack:
            d = stack.pop()
            try:
                names = os.listdir(d)
                ino = os.stat(d).st_ino
            except FileNotFoundError:
                continue
            entries: Entries = {}
            for name in names:
                p = d / name
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue
                entries[name] = st.st_ino
                if stat.S_ISDIR(st.st_mode):
                    kinds[st.st_ino] = True
                    stack.append(p)
                elif stat.S_ISREG(st.st_mode):
                    kinds[st.st_ino] = False
                    try:
                        files[st.st_ino] = _content(p.read_bytes())
                    except FileNotFoundError:
                        pass
            dirs[ino] = entries
            kinds[ino] = True
        return dirs, files, kinds

    def before_fd(self, fd: int) -> Seen:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return self.before_dir(Path(os.readlink(f"/proc/self/fd/{fd}")))
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            data = f.read()
        return {}, {st.st_ino: _content(data)}, {st.st_ino: False}

    def before_dir(self, path: Path) -> Seen:
        entries: Entries = {}
        kinds: dict[int, bool] = {}
        for name in os.listdir(path):
            try:
                st = os.lstat(path / name)
            except FileNotFoundError:
                continue
            entries[name] = st.st_ino
            kinds[st.st_ino] = stat.S_ISDIR(st.st_mode)
        ino = os.stat(path).st_ino
        kinds[ino] = True
        return {ino: entries}, {}, kinds

    def before_all(self) -> Seen:
        return self._walk()

    def commit(self, seen: Seen | None) -> None:
        if seen is None:
            return
        dirs, files, kinds = seen
        with self._lock:
            self.dirs.update(dirs)
            self.files.update(files)
            self.is_dir.update(kinds)

    # -- crash images ------------------------------------------------------------------------------

    def images(self, dest: Path) -> list[Path]:
        with self._lock:
            now_dirs, now_files, now_kinds = self._walk()
            kinds = {**self.is_dir, **now_kinds}
            units = sorted(
                [("d", ino) for ino in set(now_dirs) | set(self.dirs)
                 if now_dirs.get(ino, self.dirs.get(ino)) != self.dirs.get(ino, {})]
                + [("f", ino) for ino in set(now_files) | set(self.files)
                   if ino in now_files and now_files[ino] != self.files.get(ino, (b"", 0))])
            out = []
            for n, choice in enumerate(_choices(len(units))):
                current = {unit for unit, now in zip(units, choice, strict=True) if now}
                target = dest / f"image{n}"
                target.mkdir(parents=True)

                def entries(ino: int) -> Entries:
                    if ("d", ino) in current and ino in now_dirs:
                        return now_dirs[ino]
                    return self.dirs.get(ino, {})

                def content(ino: int) -> Content:
                    if ("f", ino) in current and ino in now_files:
                        return now_files[ino]
                    return self.files.get(ino, (b"", 0))

                _build(target, self.root_ino, entries, content, kinds)
                out.append(target)
            return out


def _half(buffers: Sequence[Buffer]) -> bytes:
    data = b"".join(bytes(b) for b in buffers)
    return data[: len(data) // 2]


def _content(data: bytes) -> Content:
    return data.rstrip(b"\0"), len(data)


def _choices(n: int) -> Iterator[tuple[bool, ...]]:
    if n <= MAX_ALL_UNITS:
        yield from itertools.product((False, True), repeat=n)
        return
    yield (False,) * n
    yield (True,) * n
    for i in range(n):
        yield tuple(j == i for j in range(n))
        yield tuple(j != i for j in range(n))


def _build(path: Path, ino: int, get_entries: Callable[[int], Entries], get_content: Callable[[int], Content],
           kinds: dict[int, bool], depth: int = 0) -> None:
    if depth > 64:  # a directory renamed into itself across the two views: stop
        return
    for name, child in get_entries(ino).items():
        target = path / name
        if kinds.get(child, False):
            target.mkdir()
            _build(target, child, get_entries, get_content, kinds, depth + 1)
            continue
        data, size = get_content(child)
        with open(target, "wb") as f:
            f.write(data)
            f.truncate(size)
