"""Many commits at once: all durable, and the directory fsyncs group-committed (pigeon.queue.syncer)."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.envelope import Envelope, Recipient
from pigeon.queue import syncer as syncer_mod
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore
from pigeon.queue.syncer import DirSyncer

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


def test_dirsyncer_covers_callers_that_arrive_during_an_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 1: a caller arriving while an fsync runs waits for the next one, which starts after
    it arrived; all callers that arrived meanwhile share that next fsync."""
    started: list[int] = []
    release = [threading.Event(), threading.Event()]

    def slow_fsync(path: Path) -> None:
        n = len(started)
        started.append(n)
        release[min(n, 1)].wait(5)

    monkeypatch.setattr(syncer_mod, "fsync_dir", slow_fsync)

    async def go() -> list[int]:
        with ThreadPoolExecutor(4) as ex:
            s = DirSyncer(tmp_path, ex)
            first = asyncio.create_task(s.sync())
            await asyncio.sleep(0.05)
            assert started == [0]
            late = [asyncio.create_task(s.sync()) for _ in range(10)]
            await asyncio.sleep(0.05)
            assert started == [0]  # the late callers wait: only one fsync at a time
            assert not any(t.done() for t in late)
            release[0].set()
            await first
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in late)  # their fsync is the second one
            release[1].set()
            await asyncio.gather(*late)
            return [s.fsyncs]

    assert asyncio.run(go()) == [2]
    assert started == [0, 1]


def test_dirsyncer_error_reaches_every_waiter_and_next_batch_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def failing_once(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(syncer_mod, "fsync_dir", failing_once)

    async def go() -> None:
        with ThreadPoolExecutor(2) as ex:
            s = DirSyncer(tmp_path, ex)
            results = await asyncio.gather(*(s.sync() for _ in range(5)), return_exceptions=True)
            # The first caller started batch 1 alone (it failed); the four that arrived while it
            # ran share batch 2, which tries again and succeeds.
            assert isinstance(results[0], OSError), results
            assert results[1:] == [None] * 4
            await s.sync()  # and later ones are unaffected

    asyncio.run(go())
    assert len(calls) == 3


def test_cancelled_waiter_does_not_cancel_the_batch(tmp_path: Path) -> None:
    async def go() -> None:
        with ThreadPoolExecutor(2) as ex:
            s = DirSyncer(tmp_path, ex)
            a = asyncio.create_task(s.sync())
            b = asyncio.create_task(s.sync())
            await asyncio.sleep(0)
            a.cancel()
            await b  # still completes
            with pytest.raises(asyncio.CancelledError):
                await a

    asyncio.run(go())
