"""store.changes: notices from worker threads wake waiters on their own loops."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from pigeon.store.changes import ChangeBus


def test_notify_from_a_thread_wakes_the_waiter_of_that_folder_only(tmp_path: Path) -> None:
    bus = ChangeBus()
    inbox, sent = tmp_path / "alice", tmp_path / "alice" / ".Sent"

    async def main() -> tuple[bool, bool]:
        a = bus.watch(inbox)
        b = bus.watch(sent)
        t = threading.Thread(target=bus.notify, args=(tmp_path / "alice" / "." ,))  # same directory, other spelling
        t.start()
        t.join()
        await asyncio.wait_for(a.wait(), 2)
        await asyncio.sleep(0.01)
        woke = (a.is_set(), b.is_set())
        bus.unwatch(inbox, a)
        bus.unwatch(sent, b)
        return woke

    assert asyncio.run(main()) == (True, False)
    assert bus.watched() == 0


def test_notify_without_waiters_and_after_the_loop_closed_is_harmless(tmp_path: Path) -> None:
    bus = ChangeBus()
    bus.notify(tmp_path)

    async def register() -> None:
        bus.watch(tmp_path)

    asyncio.run(register())  # the loop is closed afterwards; the waiter was never released
    bus.notify(tmp_path)
    assert bus.watched() == 1
