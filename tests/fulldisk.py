"""A small file system for full-disk tests: a size-limited tmpfs mounted by the test itself.

``small_fs(path, "8m")`` mounts a tmpfs of that size on ``path`` (which must not be a mount
point already) and unmounts exactly that mount when the block ends, whatever happened in it.
Mounting needs root (CI runs as root on machines where it works). Where it cannot mount, the
test is skipped on a developer's machine and FAILS when ``CI=true``: a skipped full-disk test
must never pass for a green run.

``fill(directory)`` takes every free byte of the file system with one file and returns it;
unlinking that file gives the space back.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

UMOUNT_TRIES = 50  # x 0.1 s: a process the test started may still be closing its files


def _cannot(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"full-disk test cannot mount its tmpfs on CI: {why}")
    pytest.skip(f"cannot mount a tmpfs here ({why}); CI=true makes this a failure")


@contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(path):
        raise AssertionError(f"{path} is a mount point already; refusing to mount over it")
    if os.geteuid() != 0:
        _cannot("not root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                         capture_output=True, text=True, timeout=30, check=False)
    if res.returncode != 0 or not os.path.ismount(path):
        _cannot(res.stderr.strip() or f"mount exited {res.returncode}")
    try:
        yield path
    finally:
        _umount(path)


def _umount(path: Path) -> None:
    err = ""
    for _ in range(UMOUNT_TRIES):
        res = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30, check=False)
        if res.returncode == 0 or not os.path.ismount(path):
            return
        err = res.stderr.strip()
        time.sleep(0.1)
    raise AssertionError(f"cannot unmount the test's tmpfs at {path}: {err}")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(directory: Path, name: str = "filler") -> Path:
    """Take every free byte of ``directory``'s file system (big writes, then smaller ones)."""
    target = directory / name
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    chunk = 1 << 20
    zeros = bytes(chunk)
    try:
        while chunk >= 512:
            try:
                if os.write(fd, zeros[:chunk]) < chunk:
                    chunk //= 2
            except OSError:
                chunk //= 2
    finally:
        os.close(fd)
    assert free_bytes(directory) < 4096, f"{directory} still has {free_bytes(directory)} bytes free"
    return target
