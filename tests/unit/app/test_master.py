"""app.master: start, watch, restart with back-off, hand over sockets, signal and stop worker
processes, with a tiny fake worker (a Python one-liner speaking ``app.ipc``) instead of Pigeon's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence

import pytest

from pigeon.app import ipc
from pigeon.app.master import Master, WorkerSpec

# A fake worker: ``mode`` in argv[1], the ipc version it claims in argv[2], descriptors after.
FAKE = r"""
import json, os, signal, socket, sys, time
mode, version, fds = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
def say(**m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
if mode == "crash":
    sys.exit(1)
if mode == "no-hello":
    say(op="ready", services=["smtp"]); sys.stdin.read(); sys.exit(0)
say(op="hello", version=version, pid=os.getpid())
server = json.loads(sys.stdin.readline())
if server != {"op": "hello", "version": __IPC__, "pid": os.getppid()}:
    sys.exit(5)
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, lambda *a: say(op="changed", dir="/usr1"))
signal.signal(signal.SIGHUP, lambda *a: say(op="changed", dir="/hup"))
if mode == "nonsense":
    sys.stdout.write("not json\n[[[[\n" + "x" * 300 + "\n")
    say(op="launch-missiles"); say(op="schedule", id="../../etc/passwd"); say(op="hello", version=1, pid=1)
for fd in fds:
    s = socket.socket(fileno=fd)
    ok = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    say(op="changed", dir=f"/fd/{fd}/{'listening' if ok else 'not'}")
say(op="ready", services=["smtp"])
say(op="changed", dir="/ready")
if mode == "short":
    time.sleep(0.3); sys.exit(0)
for line in sys.stdin:  # what the server sends past the hello comes back, under /echo
    say(op="changed", dir="/echo" + json.loads(line)["dir"])
""".replace("__IPC__", str(ipc.IPC_VERSION))

QID = "0123456789ABCDEF"


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, ipc.Notice]] = []
        self.ends: list[str] = []
        self.fail = False

    def message(self, worker: WorkerSpec, msg: ipc.Notice) -> None:
        if self.fail:
            raise RuntimeError("the handler broke")
        self.messages.append((worker.name, msg))

    async def ended(self, worker: WorkerSpec) -> None:
        self.ends.append(worker.name)

    def dirs(self) -> list[str]:
        return [m.directory for _, m in self.messages if isinstance(m, ipc.Changed)]


def fake(mode: str, version: int = ipc.IPC_VERSION) -> Callable[[WorkerSpec], Sequence[str]]:
    return lambda spec: [sys.executable, "-c", FAKE, mode, str(version), *map(str, spec.pass_fds)]


def spec(index: int = 1, fds: tuple[int, ...] = ()) -> WorkerSpec:
    return WorkerSpec("smtp", index, (("smtp", fds),))


def master(mode: str, rec: Recorder, *specs: WorkerSpec, version: int = ipc.IPC_VERSION, **kw: float) -> Master:
    opts: dict[str, float] = {"first_pause": 0.05, "max_pause": 0.2, "stop_grace": 2.0, "ready_timeout": 20.0}
    opts.update(kw)
    return Master(specs or (spec(),), fake(mode, version), rec, **opts)  # type: ignore[arg-type]


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.01)


def test_start_waits_for_ready_and_stop_ends_every_worker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    m = master("normal", rec, spec(1), spec(2))

    async def body() -> None:
        await m.start()
        assert len(m.pids) == 2 and [s.name for s in m.ready()] == ["smtp worker 1", "smtp worker 2"]
        await until(lambda: rec.dirs().count("/ready") == 2, "their messages reach the handler")
        await m.stop()
        assert m.pids == []

    run(body)
    assert sorted(rec.ends) == ["smtp worker 1", "smtp worker 2"]  # each end taken over once
    assert "smtp worker 1 ready pid=" in caplog.text
    assert "smtp worker 1 pid=" in caplog.text and "ended status=-15" in caplog.text
    assert "restarts" not in caplog.text  # stopping: no restart


def test_a_worker_that_ends_is_restarted_with_a_growing_pause(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    m = master("crash", rec, first_pause=0.1, max_pause=0.4)

    async def body() -> None:
        await m.start()  # returns: the worker ended before it was ready
        await until(lambda: len(m.starts(1)) >= 5, "five starts")
        await m.stop()

    run(body)
    t = m.starts(1)
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4 and gaps[3] >= 0.4
    assert gaps[3] < 0.4 + 1.5  # capped at max_pause (plus a Python start-up)
    assert len(rec.ends) >= 4  # after every end
    assert "smtp worker 1 restarts in 0.1 s" in caplog.text and "restarts in 0.2 s" in caplog.text
    assert "restarts in 0.4 s" in caplog.text and "restarts in 0.8 s" not in caplog.text
    assert "ended before its hello" in caplog.text


def test_the_pause_starts_over_after_a_worker_was_ready_long_enough(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    m = master("short", rec, first_pause=0.05, max_pause=5.0, stable_after=0.1)  # ready 0.3 s, then ends

    async def body() -> None:
        await m.start()
        await until(lambda: len(m.starts(1)) >= 4, "four starts")
        await m.stop()

    run(body)
    assert "restarts in 0.1 s" not in caplog.text  # never doubled: each life was long enough
    assert caplog.text.count("smtp worker 1 restarts in 0.05 s") >= 3


def test_a_worker_of_another_version_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    m = master("normal", rec, version=ipc.IPC_VERSION + 1)

    async def body() -> None:
        await m.start()
        await until(lambda: len(m.starts(1)) >= 2, "restarted after the refusal")
        assert m.ready() == []
        await m.stop()

    run(body)
    assert rec.messages == []  # nothing it said was acted on
    assert f"smtp worker 1 pid=" in caplog.text
    assert f"refused: peer pid=" in caplog.text
    assert f"speaks ipc version {ipc.IPC_VERSION + 1}, this side {ipc.IPC_VERSION}" in caplog.text


def test_a_worker_that_does_not_start_with_hello_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    m = master("no-hello", rec)

    async def body() -> None:
        await m.start()
        await until(lambda: "first message Ready instead of hello" in caplog.text, "refused")
        assert m.ready() == []
        await m.stop()

    run(body)
    assert rec.messages == []


def test_nonsense_on_the_pipe_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    m = master("nonsense", rec, max_line=200)

    async def body() -> None:
        await m.start()
        await until(lambda: "/ready" in rec.dirs(), "the good line after the nonsense")
        assert len(m.ready()) == 1  # not refused: past the handshake, a bad line is only a bad line
        await m.stop()

    run(body)
    refused = [r.getMessage() for r in caplog.records
               if r.levelname == "ERROR" and "smtp worker 1: refused a line on its pipe" in r.getMessage()]
    assert len(refused) == 5, refused  # not JSON, nested, over-long, unknown op, a path for a queue id
    assert any("a second hello" in r.getMessage() for r in caplog.records)
    assert rec.dirs() == ["/ready"]


def test_a_handler_that_raises_does_not_stop_the_master(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    rec.fail = True
    m = master("normal", rec)

    async def body() -> None:
        await m.start()
        await until(lambda: "acting on Changed failed" in caplog.text, "the handler's failure logged")
        rec.fail = False
        m.reload()
        await until(lambda: "/hup" in rec.dirs(), "the worker still heard")
        await m.stop()

    run(body)


def test_reload_and_flush_signal_ready_workers() -> None:
    rec = Recorder()
    m = master("normal", rec, spec(1), spec(2))

    async def body() -> None:
        await m.start()
        assert m.reload() == 2 and m.flush() == 2
        await until(lambda: rec.dirs().count("/hup") == 2 and rec.dirs().count("/usr1") == 2, "SIGHUP and SIGUSR1")
        await m.stop()
        assert m.flush() == 0  # nobody left

    run(body)


def test_a_worker_that_ignores_sigterm_is_killed_at_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    m = master("ignore-term", rec, stop_grace=0.3)

    async def body() -> None:
        await m.start()
        [pid] = m.pids
        await m.stop()
        assert m.pids == []

    run(body)
    assert "smtp worker 1 pid=" in caplog.text and "did not stop; killing it" in caplog.text
    assert "ended status=-9" in caplog.text
    assert rec.ends == ["smtp worker 1"]


def test_listening_sockets_are_handed_over() -> None:
    rec = Recorder()
    with socket.create_server(("127.0.0.1", 0)) as a, socket.socket() as b:
        fds = (a.fileno(), b.fileno())
        m = master("normal", rec, spec(1, fds))

        async def body() -> None:
            await m.start()
            await until(lambda: "/ready" in rec.dirs(), "ready")
            await m.stop()

        run(body)
    assert rec.dirs()[:2] == [f"/fd/{fds[0]}/listening", f"/fd/{fds[1]}/not"]


def test_a_command_that_cannot_run_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    m = Master([spec()], lambda s: ["/nonexistent/pigeon-worker"], rec, first_pause=0.05, max_pause=0.1)

    async def body() -> None:
        await m.start()
        await until(lambda: len(m.starts(1)) >= 3, "tried again")
        await m.stop()

    run(body)
    assert "cannot start smtp worker 1" in caplog.text
    assert len(rec.ends) >= 3


def test_send_reaches_the_ready_workers_it_selects() -> None:
    rec = Recorder()
    m = master("normal", rec, spec(1), spec(2), spec(3))

    async def body() -> None:
        await m.start()
        assert m.send(ipc.Changed("/mail/a"), lambda w: w.index != 2) == 2
        await until(lambda: rec.dirs().count("/echo/mail/a") == 2, "the selected workers got it")
        got = sorted(name for name, msg in rec.messages if isinstance(msg, ipc.Changed) and msg.directory == "/echo/mail/a")
        assert got == ["smtp worker 1", "smtp worker 3"]
        await m.stop()
        assert m.send(ipc.Changed("/mail/b"), lambda w: True) == 0  # none running

    run(body)


def test_indexes_must_be_unique() -> None:
    with pytest.raises(ValueError):
        Master([spec(1), spec(1)], fake("normal"), Recorder())


def test_the_fake_speaks_the_real_encoder() -> None:
    """The fake worker's lines are what ``ipc.encode`` writes (so these tests test the master)."""
    assert ipc.encode(ipc.Ready(("smtp",))) == b'{"op":"ready","services":["smtp"]}\n'
    assert ipc.worker_reader().feed(b'{"op": "changed", "dir": "/ready"}\n') == [ipc.Changed("/ready")]

