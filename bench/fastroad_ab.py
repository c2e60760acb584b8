"""CPU per message of the fast road in one process: journal commit + qmgr.lane + the fast agent.

Usage: ``PYTHONPATH=TREE/src python bench/fastroad_ab.py LABEL MESSAGES`` — run it for two trees
alternately (A B B A …) and compare the medians; prints ``LABEL cpu X ms/msg wall Y msg/s``.

What it measures: ``time.process_time`` (every thread of the process) over MESSAGES messages of
10 KB to one local user, committed 10 at a time into the intake journal and delivered into a
Maildir by the fast road, after 50 of warm-up; the server's SMTP work is left out, so a change
to the fast road shows here undiluted. It runs against the trees before and after the fast
agent became a ``DeliveryAgent`` (it accepts either API). Real files in a temporary directory
(deleted at the end); ``[queue] flush = "filesystem"`` as the server's default.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pigeon.clocks import SystemClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import FileQueueStore
from pigeon.store.maildir import MaildirStore

BOB = Address("bob", "example.net")
BODY = b"From: a@example.org\r\nSubject: x\r\n\r\n" + (b"y" * 78 + b"\r\n") * 125  # ~10 KB
WARM_UP = 50
BATCH = 10  # concurrent commits, as 10 SMTP sessions would make


class Directory:
    def user_exists(self, address: Address) -> bool:
        return True

    def is_local_domain(self, domain: str) -> bool:
        return True


async def main(label: str, n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pigeon-fastroad."))
    clock = SystemClock()
    queue = FileQueueStore(tmp / "queue", clock, journal=True, flush="filesystem",
                           local_domain=Directory().is_local_domain)
    mail = MaildirStore(tmp / "mail", "mx", commits=queue.commits)

    async def finish(record: QueueRecord, results: object) -> None:
        raise AssertionError(f"{record.id} spilled: {results}")

    def submit(record: QueueRecord) -> None:
        raise AssertionError(f"{record.id} spilled")

    lane: Any
    try:
        from pigeon.delivery.fastlane import FastLocalDelivery
        from pigeon.qmgr.lane import JournalLane
        agent = FastLocalDelivery(mail, Directory(), queue.commits, None)
        lane = JournalLane(queue, agent, Directory(), clock, finish=finish, submit=submit)
    except ImportError:  # the tree before: the fast lane was its own MessageAgent
        from pigeon.delivery.fastlane import FastLane  # type: ignore[attr-defined]
        lane = FastLane(queue, mail, Directory(), Directory(), clock, None, finish=finish, submit=submit)
    env = Envelope(sender=BOB, recipients=[Recipient(BOB)], body="8BITMIME",
                   client=ClientInfo("192.0.2.1", "client.example", "ESMTP", None, None))

    async def one() -> None:
        body = queue.new_body()
        body.write(BODY)
        record = await queue.commit(body, env, [RcptState(BOB, BOB)])
        assert queue.in_journal(record.id)
        lane.take(record)

    try:
        await asyncio.gather(*(one() for _ in range(WARM_UP)))
        await lane.wait_idle()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(0, n, BATCH):
            await asyncio.gather(*(one() for _ in range(BATCH)))
        await lane.wait_idle()
        c1, t1 = time.process_time(), time.perf_counter()
    finally:
        queue.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert lane.delivered == n + WARM_UP
    print(f"{label} cpu {1000 * (c1 - c0) / n:.3f} ms/msg wall {n / (t1 - t0):.0f} msg/s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
