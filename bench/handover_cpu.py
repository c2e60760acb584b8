"""CPU per message after the SMTP session hands it over: cleanup, the journal, the fast road.

Usage: ``PYTHONPATH=TREE/src python bench/handover_cpu.py LABEL MESSAGES`` — run it for two
trees alternately (A B B A …) and compare the medians; prints ``LABEL cpu X ms/msg wall Y msg/s``.

What it measures: ``time.process_time`` (every thread of the process) over MESSAGES messages
of 10 KB to one local user, each through ``cleanup.intake`` (Received:, the header scan, the
recipient's expansion), committed 10 at a time into the intake journal and delivered into a
Maildir by the fast road (``qmgr.lane``, ``delivery.fastlane``), with the mail log's lines
written to a file as the server writes them (``maillog.write_directly``) and counted for the
metrics (``maillog.observe``), after 50 of warm-up.
The SMTP session and the network are left out (``bench/ab.sh`` measures the whole), so a
change after the hand-over shows here undiluted, and a change of a few per cent is visible
on a shared machine. Real files in a temporary directory (deleted at the end); ``[queue]
flush = "filesystem"`` as the server's default.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import fastroad_ab  # bench/: the same message, batch and directory stand-in
from fastroad_ab import BATCH, BOB, BODY, WARM_UP
from pigeon import maillog
from pigeon.cleanup.intake import Intake
from pigeon.clocks import SystemClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.delivery.fastlane import FastLocalDelivery
from pigeon.qmgr.lane import JournalLane
from pigeon.queue.record import QueueRecord
from pigeon.queue.store import FileQueueStore
from pigeon.store.maildir import MaildirStore
from pigeon.web.metrics import MailCounters



class Directory(fastroad_ab.Directory):
    def expand(self, address: Address) -> list[Address]:
        return [address]


async def main(label: str, n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pigeon-handover."))
    log_stream = open(tmp / "mail.log", "w")  # noqa: SIM115 (closed below)
    handler = logging.StreamHandler(log_stream)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    maillog.write_directly([handler])
    counters = MailCounters()
    maillog.observe(counters.observe)  # the metrics, as the server counts them
    clock = SystemClock()
    queue = FileQueueStore(tmp / "queue", clock, journal=True, flush="filesystem",
                           local_domain=Directory().is_local_domain)
    mail = MaildirStore(tmp / "mail", "mx", commits=queue.commits)
    intake = Intake(queue, Directory(), "mx.example.net", clock)

    async def finish(record: QueueRecord, results: object) -> None:
        raise AssertionError(f"{record.id} spilled: {results}")

    def submit(record: QueueRecord) -> None:
        raise AssertionError(f"{record.id} spilled")

    agent = FastLocalDelivery(mail, Directory(), queue.commits, None)
    lane = JournalLane(queue, agent, Directory(), clock, finish=finish, submit=submit)
    client = ClientInfo("192.0.2.1", "client.example", "ESMTP", None, None)

    async def one() -> None:
        txn = intake.begin(Envelope(sender=BOB, recipients=[], body="8BITMIME", client=client))
        txn.add_rcpt(Recipient(BOB))
        txn.write(BODY)
        record = await txn.commit()
        maillog.queued(record.id, record.envelope.sender, record.size, len(record.rcpts))
        lane.take(record)

    try:
        await asyncio.sleep(0.5)  # the journal's first segment made ahead, as in a server that has started
        await asyncio.gather(*(one() for _ in range(WARM_UP)))
        await lane.wait_idle()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(0, n, BATCH):
            await asyncio.gather(*(one() for _ in range(BATCH)))
        await lane.wait_idle()
        c1, t1 = time.process_time(), time.perf_counter()
    finally:
        queue.close()
        maillog.write_directly(None)
        maillog.observe(None)
        logging.getLogger().removeHandler(handler)
        log_stream.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert lane.delivered == n + WARM_UP
    print(f"{label} cpu {1000 * (c1 - c0) / n:.3f} ms/msg wall {n / (t1 - t0):.0f} msg/s")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
