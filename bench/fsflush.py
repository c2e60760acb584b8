#!/usr/bin/env python3
"""Per-file fsync against one syncfs per batch: what a batch of durable Maildir deliveries costs.

One round is a batch of B 10 KiB files: create each in ``tmp/`` and write it, make them durable,
rename each into ``new/``, make the renames durable. "Make durable" is, per mode:

- ``fsync``: an ``fsync`` of every file, then one of ``new/`` (what Postfix and Dovecot do, and
  Pigeon with ``[queue] flush = "file"``);
- ``syncfs``: one ``syncfs`` of the file system, then an ``fsync`` of a directory for the
  device cache (Pigeon's default, ``durable/flushes.py`` ``FsSync``).

It prints files per second and the machine's CPU time per file (from /proc/stat, so the
kernel's flusher threads count too), alternating the modes. Linux only. Nothing outside the
test directory is written, and it is deleted at the end; other programs writing to the same
file system at the same time make the ``syncfs`` numbers worse (it flushes their data too).

Usage: python3 bench/fsflush.py [--dir DIR] [--batches 1,10,50] [--files N] [--rounds R]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import tempfile
import time
from collections.abc import Callable

DATA = os.urandom(10240)


def busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def one_run(root: str, mode: str, batch: int, files: int, syncfs: Callable[[int], int]) -> tuple[float, float]:
    rounds = max(1, files // batch)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    t0, c0 = time.perf_counter(), busy_ticks()
    try:
        for r in range(rounds):
            d = os.path.join(root, f"{mode}-{batch}-{r}-{time.time_ns()}")
            os.makedirs(os.path.join(d, "tmp"))
            os.makedirs(os.path.join(d, "new"))
            fds = []
            for i in range(batch):
                fd = os.open(os.path.join(d, "tmp", str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, DATA)
                if mode == "fsync":
                    os.fsync(fd)
                fds.append(fd)
            for fd in fds:
                os.close(fd)
            if mode == "syncfs":
                if syncfs(top) != 0:
                    raise OSError(ctypes.get_errno(), "syncfs")
                os.fsync(top)
            for i in range(batch):
                os.rename(os.path.join(d, "tmp", str(i)), os.path.join(d, "new", str(i)))
            if mode == "syncfs":
                if syncfs(top) != 0:
                    raise OSError(ctypes.get_errno(), "syncfs")
                os.fsync(top)
            else:
                nd = os.open(os.path.join(d, "new"), os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(nd)
                os.close(nd)
    finally:
        os.close(top)
    dt = time.perf_counter() - t0
    ticks = busy_ticks() - c0
    n = rounds * batch
    return n / dt, ticks * 1000.0 / os.sysconf("SC_CLK_TCK") / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp", help="a directory on the file system to measure (default /tmp)")
    ap.add_argument("--batches", default="1,10,50")
    ap.add_argument("--files", type=int, default=600, help="files per run (default 600)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per mode and batch size (default 2)")
    args = ap.parse_args()
    syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    root = tempfile.mkdtemp(prefix="pigeon-fsflush-", dir=args.dir)
    try:
        print(f"{'mode':7s} {'batch':>5s} {'files/s':>9s} {'CPU ms/file':>12s}")
        for batch in (int(b) for b in args.batches.split(",")):
            for _ in range(args.rounds):
                for mode in ("fsync", "syncfs"):
                    rate, cpu = one_run(root, mode, batch, args.files, syncfs)
                    print(f"{mode:7s} {batch:5d} {rate:9.0f} {cpu:12.3f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
