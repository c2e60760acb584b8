#!/usr/bin/env python3
"""The machine's rate of durable file creations: the physical ceiling for a durable mail queue.

One "durable creation" is what a Maildir delivery or a queue commit costs at minimum:

1. create ``tmp/NAME`` and write 4 KiB to it,
2. ``fsync`` the file,
3. ``rename`` it to ``new/NAME``,
4. ``fsync`` the ``new/`` directory.

Run single-threaded (one commit at a time, like a server without group commit) and with N
threads (concurrent commits, which a journaling file system can batch into fewer journal flushes).
Each run is bounded by both a time limit and a count limit, and removes its files.

Rules:
  1. The test directory must be on the same file system as the mail data being measured
     (default: under /tmp, as the benchmark data dirs are). A tmpfs there makes the number
     meaningless: that is reported, not hidden.
  2. Nothing but the test directory is written; it is deleted afterwards.

Usage: python3 bench/fsyncrate.py [--dir DIR] [--seconds S] [--threads 1,10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time

PAYLOAD = os.urandom(4096)


def fs_type(path: str) -> str:
    """The file system type of the mount holding ``path`` (from /proc/self/mounts)."""
    path = os.path.realpath(path)
    best, best_type = "", "unknown"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, best_type = mnt, parts[2]
    except OSError:
        pass
    return best_type


def _worker(base: str, wid: int, deadline: float, max_ops: int, counts: list[int]) -> None:
    tmp = os.path.join(base, "tmp")
    new = os.path.join(base, "new")
    dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    n = 0
    try:
        while n < max_ops and time.monotonic() < deadline:
            name = f"{wid}.{n}"
            src = os.path.join(tmp, name)
            fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, PAYLOAD)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(src, os.path.join(new, name))
            os.fsync(dfd)
            n += 1
    finally:
        os.close(dfd)
    counts[wid] = n


def measure(directory: str, threads: int, seconds: float, max_ops: int = 200_000) -> dict[str, float]:
    """Durable creations per second with ``threads`` concurrent writers."""
    base = tempfile.mkdtemp(prefix="fsyncrate-", dir=directory)
    try:
        os.mkdir(os.path.join(base, "tmp"))
        os.mkdir(os.path.join(base, "new"))
        counts = [0] * threads
        start = time.monotonic()
        deadline = start + seconds
        workers = [
            threading.Thread(target=_worker, args=(base, i, deadline, max_ops // threads, counts))
            for i in range(threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - start
        total = sum(counts)
        return {"threads": threads, "ops": total, "seconds": elapsed, "rate": total / elapsed}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp", help="where to create the test files (default /tmp)")
    ap.add_argument("--seconds", type=float, default=5.0, help="time limit per run (default 5)")
    ap.add_argument("--threads", default="1,10", help="comma-separated thread counts (default 1,10)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    fstype = fs_type(args.dir)
    results = [measure(args.dir, int(t), args.seconds) for t in args.threads.split(",")]
    if args.json:
        print(json.dumps({"dir": args.dir, "fs": fstype, "results": results}))
        return
    print(f"durable creations (4 KiB write + fsync + rename + dir fsync) in {args.dir} [{fstype}]")
    if fstype in ("tmpfs", "ramfs"):
        print("WARNING: tmpfs — fsync is a no-op here; this is not a disk number")
    for r in results:
        print(f"  {r['threads']:>3} thread(s): {r['rate']:9.0f} /s  ({r['ops']} in {r['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
