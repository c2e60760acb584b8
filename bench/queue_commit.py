#!/usr/bin/env python3
"""Durable queue commits per second (pigeon.queue.store.QueueStore), with and without concurrency.

Each commit is the full commit point of docs/queue.md: body streamed to ``tmp/`` (4 KiB by
default), body fsync + rename into ``msg/``, record write + fsync, ``msg/`` fsync, rename into
``active/``, ``active/`` fsync. ``concurrency`` commits run at once on one event loop (as
concurrent SMTP sessions would); directory fsyncs are group-committed.

Rules:
  1. The queue directory is created under --dir (default /tmp, the same file system the server
     benchmarks use) and deleted afterwards; nothing else is written.
  2. Each run is bounded by both a time limit and a count limit.
  3. Next to the rate it prints how many directory fsyncs ran per commit (group commit at work).

Usage: .venv/bin/python bench/queue_commit.py [--dir DIR] [--seconds S] [--concurrency 1,10,50]
       [--size BYTES] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pigeon.clocks import SystemClock  # noqa: E402
from pigeon.core.address import Address  # noqa: E402
from pigeon.core.envelope import ClientInfo, Envelope, Recipient  # noqa: E402
from pigeon.queue.record import RcptState  # noqa: E402
from pigeon.queue.store import QueueStore  # noqa: E402

MAX_COMMITS = 200_000  # rule 2: count bound per run


async def _run(store: QueueStore, concurrency: int, seconds: float, payload: bytes) -> int:
    rcpt = Address("bench", "bench.test")
    deadline = time.monotonic() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline and done < MAX_COMMITS:
            body = store.new_body()
            body.write(payload)
            env = Envelope(Address("sender", "example.org"), [Recipient(rcpt)],
                           client=ClientInfo("127.0.0.1", "bench", "ESMTP"))
            await store.commit(body, env, [RcptState(rcpt, rcpt)])
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def measure(directory: str, concurrency: int, seconds: float, size: int) -> dict[str, float]:
    base = tempfile.mkdtemp(prefix="queuecommit-", dir=directory)
    store = QueueStore(Path(base) / "queue", SystemClock())
    try:
        start = time.monotonic()

        async def go() -> tuple[int, int, int]:
            n = await _run(store, concurrency, seconds, os.urandom(size))
            return n, store.dir_fsyncs("active"), store.dir_fsyncs("msg")

        n, active, msg = asyncio.run(go())
        elapsed = time.monotonic() - start
        return {
            "concurrency": concurrency,
            "commits": n,
            "seconds": elapsed,
            "rate": n / elapsed,
            "dir_fsyncs_per_commit": (active + msg) / max(n, 1),
        }
    finally:
        store.close()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,10,50,200")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [measure(args.dir, int(c), args.seconds, args.size) for c in args.concurrency.split(",")]
    if args.json:
        print(json.dumps({"dir": args.dir, "size": args.size, "results": results}))
        return
    print(f"durable queue commits ({args.size} B bodies) in {args.dir}")
    for r in results:
        print(f"  concurrency {r['concurrency']:>4}: {r['rate']:8.0f} commits/s  "
              f"({r['commits']} in {r['seconds']:.1f} s, {r['dir_fsyncs_per_commit']:.2f} dir fsyncs/commit)")


if __name__ == "__main__":
    main()
