"""Many commits at once: all durable, and the directory fsyncs group-committed (pigeon.durable.commit)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import Envelope, Recipient
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore

N = 200


def test_200_concurrent_commits_are_durable_and_grouped(tmp_path: Path) -> None:
    root = tmp_path / "queue"
    store = QueueStore(root, FakeClock())

    async def one(i: int) -> QueueRecord:
        rcpt = Address(f"user{i}", "example.net")
        body = store.new_body()
        body.write(f"Subject: {i}\r\n\r\nmessage {i}\r\n".encode())
        return await store.commit(body, Envelope(None, [Recipient(rcpt)]), [RcptState(rcpt, rcpt)])

    async def go() -> tuple[list[QueueRecord], int, int]:
        recs = await asyncio.gather(*(one(i) for i in range(N)))
        return list(recs), store.dir_fsyncs("active"), store.dir_fsyncs("msg")

    try:
        recs, active_fsyncs, msg_fsyncs = asyncio.run(go())
    finally:
        store.close()
    assert len({r.id for r in recs}) == N
    # Group commit: far fewer directory fsyncs than commits.
    assert 1 <= active_fsyncs < N // 2, active_fsyncs
    assert 1 <= msg_fsyncs < N // 2, msg_fsyncs
    fresh = QueueStore(root, FakeClock())
    report = fresh.recover()
    assert sorted(report.active) == sorted(r.id for r in recs)
    assert report.corrupt == [] and report.orphans_removed == []
    for r in recs:
        i = int(r.rcpts[0].address.local[4:])
        assert fresh.body_path(r.id).read_bytes() == f"Subject: {i}\r\n\r\nmessage {i}\r\n".encode()
    assert os.listdir(root / "tmp") == []
