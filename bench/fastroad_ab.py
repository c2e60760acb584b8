import asyncio, sys, time, tempfile, gc
from pathlib import Path
from pigeon.clocks import FakeClock, SystemClock
from pigeon.core.address import Address
from pigeon.core.envelope import ClientInfo, Envelope, Recipient
from pigeon.queue.record import RcptState
from pigeon.queue.store import FileQueueStore
from pigeon.store.maildir import MaildirStore

BOB = Address("bob", "example.net")
BODY = b"From: a@example.org\r\nSubject: x\r\n\r\n" + (b"y" * 78 + b"\r\n") * 125

class Dir:
    def user_exists(self, a): return True
    def is_local_domain(self, d): return True

async def main(n):
    tmp = Path(tempfile.mkdtemp(dir="/tmp/agents-ab/micro"))
    clock = SystemClock()
    q = FileQueueStore(tmp / "queue", clock, journal=True, flush="filesystem", local_domain=Dir().is_local_domain)
    mail = MaildirStore(tmp / "mail", "mx", commits=q.commits)
    async def finish(r, res): raise AssertionError(res)
    def submit(r): raise AssertionError(r)
    try:
        from pigeon.qmgr.lane import JournalLane
        from pigeon.delivery.fastlane import FastLocalDelivery
        lane = JournalLane(q, FastLocalDelivery(mail, Dir(), q.commits, None), Dir(), clock, finish=finish, submit=submit)
    except ImportError:
        from pigeon.delivery.fastlane import FastLane
        lane = FastLane(q, mail, Dir(), Dir(), clock, None, finish=finish, submit=submit)
    env = Envelope(sender=BOB, recipients=[Recipient(BOB)], body="8BITMIME", client=ClientInfo("1.2.3.4","h","ESMTP",None,None))
    async def one():
        b = q.new_body(); b.write(BODY)
        rec = await q.commit(b, env, [RcptState(BOB, BOB)])
        assert q.in_journal(rec.id)
        lane.take(rec)
    # warm
    await asyncio.gather(*(one() for _ in range(50))); await lane.wait_idle()
    c0 = time.process_time(); t0 = time.perf_counter()
    for i in range(0, n, 10):
        await asyncio.gather(*(one() for _ in range(10)))
    await lane.wait_idle()
    c1 = time.process_time(); t1 = time.perf_counter()
    q.close()
    print(f"{sys.argv[1]} cpu {1000*(c1-c0)/n:.3f} ms/msg wall {n/(t1-t0):.0f} msg/s delivered={lane.delivered}")
asyncio.run(main(int(sys.argv[2])))
