#!/usr/bin/env python3
"""The latency of one commit's flush, four ways: what the intake journal's commit waits for.

Each sample appends one entry of ``--size`` bytes (10.5 KB: a 10 KB message with its record) and
makes it durable; the table gives the median and the 90th percentile of ``--samples`` samples:

- ``made ahead``: ``pwrite`` into a file already zero-filled to its size and flushed, then
  ``fdatasync``: no size or block allocation to write (``durable/journal.py`` rule 7, the commit
  since 2026-11-27 10:34);
- ``growing``: an append to a growing file, then ``fdatasync`` (size and allocation written too);
- ``growing + syncfs``: the same append, then one ``syncfs`` of the file system;
- ``+ Maildir file + syncfs``: the append, plus a Maildir-like file of the same size created in
  ``tmp/``, then ``syncfs`` and an ``fsync`` of the directory (the commit of 2026-11-27 08:21,
  which covered the fast lane's files written before it).

Linux only (``syncfs``). Nothing outside the test directory is written; it is deleted at the
end. Other programs writing to the same file system make the ``syncfs`` rows worse.

Usage: python3 bench/flushlat.py [--dir DIR] [--samples N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def timed(n: int, step: Callable[[int], None]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        step(i)
        out.append(time.perf_counter() - t)
    return out


def made_ahead(d: str, n: int, data: bytes) -> list[float]:
    fd = os.open(os.path.join(d, "made-ahead"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = n * len(data) + 4096
        zeros = bytes(1 << 20)
        for off in range(0, size, len(zeros)):
            os.pwrite(fd, zeros[: min(len(zeros), size - off)], off)
        os.fdatasync(fd)

        def step(i: int) -> None:
            os.pwrite(fd, data, i * len(data))
            os.fdatasync(fd)

        return timed(n, step)
    finally:
        os.close(fd)


def growing(d: str, n: int, data: bytes, flush: str) -> list[float]:
    fd = os.open(os.path.join(d, f"growing-{flush}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    tmp = os.path.join(d, f"tmp-{flush}")
    os.mkdir(tmp)
    dfd = os.open(tmp, os.O_RDONLY)
    try:
        def step(i: int) -> None:
            os.write(fd, data)
            if flush == "fdatasync":
                os.fdatasync(fd)
                return
            if flush == "maildir":
                f = os.open(os.path.join(tmp, f"m{i}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(f, data)
                finally:
                    os.close(f)
            syncfs(fd)
            if flush == "maildir":
                os.fsync(dfd)

        return timed(n, step)
    finally:
        os.close(dfd)
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--size", type=int, default=10500)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="flushlat-", dir=args.dir)
    data = os.urandom(args.size)
    try:
        rows = [
            ("made ahead: pwrite + fdatasync", made_ahead(d, args.samples, data)),
            ("growing: append + fdatasync", growing(d, args.samples, data, "fdatasync")),
            ("growing: append + syncfs", growing(d, args.samples, data, "syncfs")),
            ("append + Maildir file + syncfs + dir fsync", growing(d, args.samples, data, "maildir")),
        ]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"| flush ({args.samples} samples of {args.size} bytes, {d}) | median ms | p90 ms |")
    print("|---|---:|---:|")
    for name, lat in rows:
        lat.sort()
        print(f"| {name} | {statistics.median(lat) * 1e3:.2f} | {lat[int(len(lat) * 0.9)] * 1e3:.2f} |")


if __name__ == "__main__":
    main()
