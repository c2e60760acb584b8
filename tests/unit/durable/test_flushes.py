"""The flush kinds (pigeon.durable.flushes) and the IO seam's real side (pigeon.durable.io):
syncfs where it reports errors, one descriptor per file system, the helpers."""

from __future__ import annotations

import errno
import os
import platform
from pathlib import Path

import pytest

from pigeon.durable import flushes
from pigeon.durable.flushes import Close, DataSync, DirSync, FileSync, FileSystems, FsSync, Unlink
from pigeon.durable.io import (
    MIN_SYNCFS_KERNEL,
    REAL,
    FileWriter,
    fsync_path,
    kernel_version,
    makedirs_durable,
    syncfs_reports_errors,
    unlink_quietly,
    write_file_synced,
)
from pigeon.durable.testing import FaultyIO


def test_kernel_versions_are_read_from_the_release_string() -> None:
    v = kernel_version
    assert v("6.18.44-fc-v669") == (6, 18)
    assert v("5.8.0") == (5, 8) and v("5.8.0") >= MIN_SYNCFS_KERNEL
    assert v("5.7.19-generic") < MIN_SYNCFS_KERNEL
    assert v("4.19.0-26-amd64") < MIN_SYNCFS_KERNEL
    assert v("6.1rc3") == (6, 1)
    assert v("garbage") == (0, 0) and v("") == (0, 0)


def test_syncfs_is_available_on_this_machine() -> None:
    # These machines run Linux >= 5.8 (env docs); if this fails, the server falls back to
    # per-file fsyncs there, and the fast lane's file-system tests say so.
    release = kernel_version(platform.release())
    assert syncfs_reports_errors() is (platform.system() == "Linux" and release >= MIN_SYNCFS_KERNEL)


def needs_syncfs() -> None:
    if not syncfs_reports_errors():
        pytest.fail("syncfs with error reporting (Linux >= 5.8) is needed for this test")


def test_one_descriptor_per_file_system_and_flush_works(tmp_path: Path) -> None:
    needs_syncfs()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_bytes(b"x" * 4096)
    fss = FileSystems(REAL)
    try:
        fa, fb = fss.of(a), fss.of(b)
        assert fa is fb and fa.dev == os.stat(a).st_dev
        assert fa.key == ("syncfs", fa.dev)
        assert fss.of(a) is fa  # cached by path
        fa.run(REAL)
        fd = fa.fd
        assert fd >= 0
    finally:
        fss.close()
    assert fa.fd == -1
    with pytest.raises(OSError) as info:
        os.fstat(fd)  # closed
    assert info.value.errno == errno.EBADF


def test_a_failing_syncfs_raises_oserror_with_its_errno() -> None:
    needs_syncfs()
    fs = FsSync(-1, 0)  # no such descriptor: syncfs fails with EBADF
    with pytest.raises(OSError) as info:
        fs.run(REAL)
    assert info.value.errno == errno.EBADF


def test_a_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileSystems(REAL).of(tmp_path / "missing")


def test_the_directory_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flushes, "MAX_PATHS", 8)
    fss = FileSystems(REAL)
    try:
        dirs = []
        for i in range(20):
            d = tmp_path / f"u{i}"
            d.mkdir()
            dirs.append(d)
        first = fss.of(dirs[0])
        for d in dirs:
            assert fss.of(d) is first  # one file system, one descriptor, however many paths
            assert len(fss._by_path) <= 8
        assert len(fss._by_dev) == 1
    finally:
        fss.close()


def test_each_kind_makes_its_calls_and_names_what_it_covers(tmp_path: Path) -> None:
    fio = FaultyIO()
    fd = fio.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    assert FileSync(fd).key == ("fsync", fd) and DataSync(fd).key == ("fdatasync", fd)
    assert DirSync(tmp_path).key == ("dir", str(tmp_path)) == DirSync(Path(str(tmp_path))).key
    FileSync(fd).run(fio)
    DataSync(fd).run(fio)
    FileSync(fd, close=True).run(fio)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the last one
    fd2 = fio.open(tmp_path / "g", os.O_WRONLY | os.O_CREAT)
    Close(fd2).run(fio)
    DirSync(tmp_path).run(fio)
    Unlink(tmp_path / "g").run(fio)
    assert not (tmp_path / "g").exists()
    assert fio.calls == {"open": 2, "fsync": 2, "fdatasync": 1, "close": 2, "fsync_dir": 2, "unlink": 1}


def test_a_failed_fsync_still_closes_when_asked(tmp_path: Path) -> None:
    fio = FaultyIO()
    fd = fio.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    fio.fail("fsync", error=errno.EIO)
    with pytest.raises(OSError):
        FileSync(fd, close=True).run(fio)
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF


# -- the helpers of durable.io -----------------------------------------------------------------------------

def test_unlink_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    assert unlink_quietly(f) is True
    assert unlink_quietly(f) is False  # gone already: no error, no log line
    fio = FaultyIO()
    f.write_bytes(b"x")
    fio.fail("unlink", error=errno.EIO)
    assert unlink_quietly(f, fio) is False
    assert f.exists()
    assert any("could not remove" in r.getMessage() for r in caplog.records)


def test_makedirs_durable_fsyncs_the_parent_of_each_new_directory(tmp_path: Path) -> None:
    fio = FaultyIO()
    assert makedirs_durable(tmp_path / "a" / "b" / "c", io=fio) is True
    assert [w for op, w in fio.trace if op == "fsync_dir"] == [str(tmp_path), str(tmp_path / "a"),
                                                               str(tmp_path / "a" / "b")]
    assert (os.stat(tmp_path / "a" / "b" / "c").st_mode & 0o777) == 0o700
    assert makedirs_durable(tmp_path / "a" / "b" / "c", io=fio) is False  # there: nothing to do
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        makedirs_durable(tmp_path / "file", io=fio)


def test_write_file_synced_removes_the_file_when_the_fsync_fails(tmp_path: Path) -> None:
    fio = FaultyIO()
    write_file_synced(tmp_path / "ok", b"data", fio)
    assert (tmp_path / "ok").read_bytes() == b"data"
    fio.fail("fsync", error=errno.ENOSPC)
    with pytest.raises(OSError) as info:
        write_file_synced(tmp_path / "bad", b"data", fio)
    assert info.value.errno == errno.ENOSPC
    assert not (tmp_path / "bad").exists()
    with pytest.raises(FileExistsError):
        write_file_synced(tmp_path / "ok", b"again", fio)
    fsync_path(tmp_path / "ok", fio)


def test_file_writer_writes_in_chunks(tmp_path: Path) -> None:
    fio = FaultyIO()
    fd = fio.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    out = FileWriter(fio, fd, 10)
    for _ in range(5):
        out.write(b"abcd")
    out.flush()
    fio.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abcd" * 5
    assert fio.calls["write"] == 2  # 12 bytes once the buffer passed 10, then the last 8


def test_rename_noreplace_never_overwrites(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    try:
        done = REAL.rename_noreplace(a, b)
    except FileExistsError:
        done = None
    assert done in (None, False)  # refused (or unsupported here): b is untouched
    assert b.read_bytes() == b"B"
    if REAL.rename_noreplace(a, tmp_path / "c"):
        assert not a.exists() and (tmp_path / "c").read_bytes() == b"A"
