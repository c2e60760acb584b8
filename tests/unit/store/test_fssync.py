"""syncfs as a durable flush (pigeon.store.fssync): where it is used, one descriptor per file
system, errors raised."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pigeon.store import fssync


def test_kernel_versions_are_read_from_the_release_string() -> None:
    v = fssync._kernel_version
    assert v("6.18.44-fc-v669") == (6, 18)
    assert v("5.8.0") == (5, 8) and v("5.8.0") >= fssync.MIN_KERNEL
    assert v("5.7.19-generic") < fssync.MIN_KERNEL
    assert v("4.19.0-26-amd64") < fssync.MIN_KERNEL
    assert v("6.1rc3") == (6, 1)
    assert v("garbage") == (0, 0) and v("") == (0, 0)


def test_available_on_this_machine() -> None:
    # These machines run Linux >= 5.8 (env docs); if this fails, the server falls back to
    # per-file fsyncs there, and the fast lane's file-system tests say so.
    import platform

    release = fssync._kernel_version(platform.release())
    assert fssync.available() is (platform.system() == "Linux" and release >= fssync.MIN_KERNEL)


def test_one_descriptor_per_file_system_and_flush_works(tmp_path: Path) -> None:
    if not fssync.available():
        pytest.fail("syncfs with error reporting (Linux >= 5.8) is needed for this test")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_bytes(b"x" * 4096)
    fss = fssync.FileSystems()
    try:
        fa, fb = fss.of(a), fss.of(b)
        assert fa is fb and fa.dev == os.stat(a).st_dev
        assert fa.key == ("syncfs", fa.dev)
        assert fss.of(a) is fa  # cached by path
        fa.flush()
        fd = fa.fd
        assert fd >= 0
    finally:
        fss.close()
    assert fa.fd == -1
    with pytest.raises(OSError) as info:
        os.fstat(fd)  # closed
    assert info.value.errno == errno.EBADF


def test_a_failing_syncfs_raises_oserror_with_its_errno(tmp_path: Path) -> None:
    if not fssync.available():
        pytest.fail("syncfs with error reporting (Linux >= 5.8) is needed for this test")
    fs = fssync.FileSystem(-1, 0)  # no such descriptor: syncfs fails with EBADF
    with pytest.raises(OSError) as info:
        fs.flush()
    assert info.value.errno == errno.EBADF


def test_a_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fssync.FileSystems().of(tmp_path / "missing")


def test_the_directory_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not fssync.available():
        pytest.fail("syncfs with error reporting (Linux >= 5.8) is needed for this test")
    monkeypatch.setattr(fssync, "MAX_PATHS", 8)
    fss = fssync.FileSystems()
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
