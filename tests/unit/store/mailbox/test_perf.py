"""Timing of a 10,000-message folder: first indexing, SELECT with a current index, idle sync.

Bounds are loose (shared CI machines); the measured numbers are printed (``pytest -s``) and
reported in the hand-back. Targets from the brief: SELECT + messages() well under 100 ms when
the index is current; first indexing in seconds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pigeon.clocks import FakeClock
from pigeon.store.mailbox import MailStore
from tests.unit.store.mailbox.conftest import BOB, MSG

N = 10_000


def _fill_new(maildir: Path) -> None:
    body = MSG.replace(b"\r\n", b"\n")
    for i in range(N):
        name = f"{1_600_000_000 + i}.M{i}P1Q{i}.mx.example.com,S={len(body)},W={len(MSG)}"
        path = maildir / "new" / name
        path.write_bytes(body)
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))


def _age_dirs(maildir: Path) -> None:
    """Make new/ and cur/ look settled (older than scan.DIRTY_WINDOW_NS), as they are in use."""
    for sub in ("new", "cur"):
        os.utime(maildir / sub, (time.time() - 60, time.time() - 60))


def test_ten_thousand_messages(tmp_path: Path) -> None:
    clock = FakeClock()
    store = MailStore(tmp_path / "mail", "mx.example.com", clock)
    maildir = tmp_path / "mail" / "example.com" / "bob"
    try:
        account = store.account(BOB)
        _fill_new(maildir)

        t0 = time.perf_counter()
        box = account.select("INBOX")
        first_index = time.perf_counter() - t0
        assert len(box.messages()) == N and box.messages()[-1].uid == N
        assert box.read(N).endswith(b"line two\r\n")
        box.close()

        _age_dirs(maildir)
        account.status("INBOX")  # records the settled mtimes
        t0 = time.perf_counter()
        box = account.select("INBOX")
        msgs = box.messages()
        select_warm = time.perf_counter() - t0
        assert len(msgs) == N

        t0 = time.perf_counter()
        for _ in range(100):
            assert box.sync().empty
        idle_sync = (time.perf_counter() - t0) / 100

        t0 = time.perf_counter()
        box.store(range(1, N + 1), "add", frozenset({"\\Seen"}))
        store_all = time.perf_counter() - t0

        t0 = time.perf_counter()
        assert box.sync().empty
        dirty_sync = time.perf_counter() - t0  # cur/ changed just now: full listing compare
        box.close()

        _age_dirs(maildir)
        t0 = time.perf_counter()
        box = account.select("INBOX")
        select_full_scan = time.perf_counter() - t0  # cur/ moved since the last scan
        box.close()
    finally:
        store.close()

    # A new process: fresh MailStore, index on disk is current.
    store = MailStore(tmp_path / "mail", "mx.example.com", clock)
    try:
        t0 = time.perf_counter()
        box = store.account(BOB).select("INBOX")
        msgs = box.messages()
        select_cold = time.perf_counter() - t0
        assert len(msgs) == N and all("\\Seen" in m.flags for m in msgs)
        box.close()
    finally:
        store.close()

    print(f"\n10k: first indexing {first_index*1000:.0f} ms, SELECT+messages {select_warm*1000:.1f} ms"
          f" (new process {select_cold*1000:.1f} ms), idle sync {idle_sync*1e6:.0f} us,"
          f" STORE +FLAGS all {store_all*1000:.0f} ms, sync after own change {dirty_sync*1000:.1f} ms,"
          f" SELECT after cur/ changed {select_full_scan*1000:.1f} ms")
    assert first_index < 20.0
    assert select_warm < 0.5 and select_cold < 0.5
    assert idle_sync < 0.005
