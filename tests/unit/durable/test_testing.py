"""The fault-injecting IO seam (pigeon.durable.testing): faults at the Nth call, crashes that
stop the sequence, and the states a crash may leave on the disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pigeon.durable.io import write_file_synced
from pigeon.durable.testing import Crash, FaultyIO, NoFlushIO


def create(fio: FaultyIO, path: Path, data: bytes) -> int:
    fd = fio.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    fio.write(fd, data)
    return fd


def test_a_fault_fires_at_the_nth_call_of_its_operation_only(tmp_path: Path) -> None:
    fio = FaultyIO()
    fio.fail("fsync", nth=2, error=errno.ENOSPC)
    fds = [create(fio, tmp_path / f"f{i}", b"x") for i in range(3)]
    fio.fsync(fds[0])
    with pytest.raises(OSError) as info:
        fio.fsync(fds[1])
    assert info.value.errno == errno.ENOSPC
    fio.fsync(fds[2])  # times=1: once
    assert fio.calls["fsync"] == 3 and fio.calls["open"] == 3
    for fd in fds:
        fio.close(fd)


def test_match_and_times(tmp_path: Path) -> None:
    fio = FaultyIO()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fio.fail("fsync_dir", match="/b", error=errno.EIO, times=None)
    fio.fsync_dir(tmp_path / "a")
    for _ in range(3):
        with pytest.raises(OSError):
            fio.fsync_dir(tmp_path / "b")
    fio.clear()
    fio.fsync_dir(tmp_path / "b")


def test_a_short_write_writes_half_and_says_so(tmp_path: Path) -> None:
    fio = FaultyIO()
    fio.short("writev")
    fd = fio.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    assert fio.writev(fd, [b"abcd", b"efgh"]) == 4
    fio.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abcd"
    with pytest.raises(ValueError):
        fio.short("fsync")


def test_a_crash_stops_every_later_change_but_not_reads_and_close(tmp_path: Path) -> None:
    fio = FaultyIO()
    fd = create(fio, tmp_path / "f", b"data")
    fio.crash("fsync")
    with pytest.raises(Crash):
        fio.fsync(fd)
    assert fio.crashed
    with pytest.raises(Crash):
        fio.rename(tmp_path / "f", tmp_path / "g")  # the process is dead
    with pytest.raises(Crash):
        fio.open(tmp_path / "h", os.O_WRONLY | os.O_CREAT)
    fio.close(fd)  # close and reads still work
    rd = fio.open(tmp_path / "f", os.O_RDONLY)
    assert fio.pread(rd, 4, 0) == b"data"
    fio.close(rd)
    assert not issubclass(Crash, Exception)  # no `except Exception` handler undoes anything
    assert (tmp_path / "f").exists() and not (tmp_path / "g").exists()
    fio.halt()
    fio.rename(tmp_path / "f", tmp_path / "g")  # halted: nothing happens, nothing raises
    assert (tmp_path / "f").exists() and not (tmp_path / "g").exists()


def test_statvfs_reports_the_free_space_the_test_sets(tmp_path: Path) -> None:
    fio = FaultyIO()
    real = os.statvfs(tmp_path)
    assert fio.statvfs(tmp_path).f_bavail == real.f_bavail or fio.free is None
    fio.free = 10 * real.f_frsize
    st = fio.statvfs(tmp_path)
    assert st.f_bavail * st.f_frsize == 10 * real.f_frsize


# -- the model of what is durable ----------------------------------------------------------------------

def images(fio: FaultyIO, tmp_path: Path) -> list[dict[str, bytes]]:
    """Each crash image as {relative path: content}."""
    out = []
    for image in fio.crash_images(tmp_path / "images"):
        out.append({str(p.relative_to(image)): p.read_bytes() for p in sorted(image.rglob("*")) if p.is_file()})
    return out


def test_an_unflushed_file_and_name_may_or_may_not_survive(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    fio = FaultyIO(NoFlushIO(), root=root)
    fio.close(create(fio, root / "f", b"data"))
    found = images(fio, tmp_path)
    # the directory (has the name or not) x the file (its bytes or none yet)
    assert sorted(map(sorted, (i.items() for i in found))) == sorted(
        [[], [], [("f", b"")], [("f", b"data")]])


def test_a_file_flushed_and_its_name_flushed_always_survive(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    fio = FaultyIO(NoFlushIO(), root=root)
    write_file_synced(root / "f", b"data", fio)
    fio.fsync_dir(root)
    assert images(fio, tmp_path) == [{"f": b"data"}]


def test_a_rename_before_the_directory_flush_may_be_undone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    (root / "new").mkdir()
    fio = FaultyIO(NoFlushIO(), root=root)
    write_file_synced(root / "tmp" / "f", b"data", fio)
    fio.fsync_dir(root / "tmp")
    fio.rename(root / "tmp" / "f", root / "new" / "f")
    found = images(fio, tmp_path)
    # tmp/ and new/ each as flushed or as it is now: the name in either, in both, or in neither
    # (a file system without a journal may write either directory first; fsck then finds the
    # file in lost+found). What a caller may rely on comes after both flushes.
    assert sorted(map(sorted, found)) == [[], ["new/f"], ["new/f", "tmp/f"], ["tmp/f"]]
    fio.fsync_dir(root / "new")
    fio.fsync_dir(root / "tmp")
    assert images(fio, tmp_path / "again") == [{"new/f": b"data"}]


def test_syncfs_makes_everything_durable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    fio = FaultyIO(NoFlushIO(), root=root)
    fd = create(fio, root / "f", b"data")
    fio.syncfs(fd)
    fio.close(fd)
    assert images(fio, tmp_path) == [{"f": b"data"}]


def test_crash_images_need_a_root() -> None:
    with pytest.raises(ValueError):
        FaultyIO().crash_images(Path("/nonexistent"))
