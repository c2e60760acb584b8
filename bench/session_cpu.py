"""CPU per SMTP session of the session side alone: accept to the 250 after DATA, no queue, no disk.

One process runs the real listener, session driver, SMTP core and session policy
(``net.listener``, ``net.driver``, ``proto.smtp.server``, ``smtpd.session``) with an intake
that commits nothing (every message "queued" at once), and the server's mail log lines written
to memory; ``smtp-source`` sends 10 KB messages, one per connection, from 10 sessions. Printed
per tree: server CPU (user + sys, ``getrusage``) per session after a warm-up, so two trees can
be compared without the queue's and the delivery's share (and noise) in the number.

    python3 bench/session_cpu.py --tree /tmp/A --tree . --sessions 6000 --rounds 3

Each tree runs in its own interpreter (``PYTHONPATH=TREE/src``), alternating A B A B ...; run it
under the exclusive machine lock. Loopback only; it stops only the servers it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
from pathlib import Path

WARM_UP = 200  # sessions before the CPU is read (imports, first allocations)


def serve(port: int, total: int) -> None:
    """The server side: run in a child interpreter with the tree under test on sys.path."""
    from pigeon import maillog
    from pigeon.config import Config
    from pigeon.net.listener import ConnectionLimits, Listener
    from pigeon.smtpd.session import SmtpContext, SmtpSession

    class Directory:
        def is_local_domain(self, domain: str) -> bool:
            return domain == "bench.test"

        def accepts(self, address: object) -> bool:
            return True

    class Record:
        def __init__(self, envelope: object) -> None:
            self.id, self.envelope, self.size = "22FCCAN11K309NFK", envelope, 10240

    class Txn:
        def __init__(self, envelope: object) -> None:
            self.envelope = envelope

        def write(self, data: bytes) -> None:
            pass

        def add_rcpt(self, rcpt: object) -> None:
            pass

        def abort(self) -> None:
            pass

        async def commit(self) -> Record:
            return Record(self.envelope)

    class Intake:
        def begin(self, envelope: object, add_missing_headers: bool | None = None) -> Txn:
            return Txn(envelope)

    class Sink:  # the server's log handler, in memory
        class stream:  # noqa: N801 - stands in for a handler's stream attribute
            @staticmethod
            def write(text: str) -> None:
                pass

            @staticmethod
            def flush() -> None:
                pass

        def acquire(self) -> None:
            pass

        def release(self) -> None:
            pass

    maillog.write_directly([Sink()])  # type: ignore[list-item]
    import logging
    logging.getLogger("pigeon.mail").setLevel(logging.INFO)
    cfg = Config(hostname="pigeon.bench.test", data_dir=Path("/tmp"), domains=("bench.test",))
    ctx = SmtpContext(lambda: cfg, Directory(), Intake(), lambda r: None)  # type: ignore[arg-type]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        count = 0
        start: resource.struct_rusage | None = None

        def factory(stream: object) -> SmtpSession:
            nonlocal count, start
            count += 1
            if count == WARM_UP:
                start = resource.getrusage(resource.RUSAGE_SELF)
            if count == total:
                loop.call_later(0.2, done.set)  # the last session's few turns of the loop
            return SmtpSession(stream, ctx)  # type: ignore[arg-type]

        limits = ConnectionLimits(1000, 1000, 300.0, 300.0)
        listener = Listener("smtp", [("127.0.0.1", port)], factory, lambda: limits, b"421 busy\r\n")
        await listener.start()
        print("ready", flush=True)
        await done.wait()
        end = resource.getrusage(resource.RUSAGE_SELF)
        assert start is not None
        n = total - WARM_UP
        user, system = end.ru_utime - start.ru_utime, end.ru_stime - start.ru_stime
        print(f"{(user + system) / n * 1e6:.1f} {user / n * 1e6:.1f} {system / n * 1e6:.1f}", flush=True)
        await listener.stop(1)

    asyncio.run(main())


def run_tree(tree: Path, port: int, sessions: int) -> tuple[float, float, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(sessions)],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit(f"{tree}: the server did not start")
        subprocess.run(["smtp-source", "-s", "10", "-m", str(sessions), "-l", "10240", "-f",
                        "from@bench.test", "-t", "bench@bench.test", f"127.0.0.1:{port}"], check=True)
        total, user, system = (float(x) for x in server.stdout.readline().split())
        server.wait(10)
        return total, user, system
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", action="append", required=True, help="a directory holding src/pigeon")
    ap.add_argument("--sessions", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=2731)
    args = ap.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {t: [] for t in args.tree}
    for _ in range(args.rounds):
        for tree in args.tree:
            got = run_tree(Path(tree).resolve(), args.port, args.sessions)
            results[tree].append(got)
            print(f"{tree}: {got[0]:.1f} µs/session (user {got[1]:.1f}, sys {got[2]:.1f})", flush=True)
    for tree, rows in results.items():
        rows.sort()
        mid = rows[len(rows) // 2]
        print(f"median {tree}: {mid[0]:.1f} µs/session (user {mid[1]:.1f}, sys {mid[2]:.1f})")


if __name__ == "__main__":
    main()
