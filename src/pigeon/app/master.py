"""The process model: worker processes started, watched, restarted and stopped by one facility,
as Postfix's ``master`` does for its daemons.

A Python process runs Python on one core at a time; a service that needs more cores runs in
worker processes too, each serving the server's own listening sockets (one accept queue:
whichever process is free takes the next connection). What a worker does is not this
module's business: a ``WorkerSpec`` says which services it serves, which command runs it and
which listening sockets it inherits, and a ``WorkerHandler`` (the server's ``app.hub``) acts on
what it says (``app.ipc``), and ``send`` passes the server's notices to them. Pools: ``smtp``,
``imap`` and ``pop3`` (docs/architecture.md "The process model").

Rules:
1. A worker is a ``WorkerSpec``: its pool (the configuration section that asks for it, and the
   first word of its name, ``smtp worker 1``), its index (unique over every pool of the server:
   it names the worker's journal, ``w<index>``, and its slot of its pool's load board), its
   services, its command, and the listening sockets it inherits (``pass_fds``; every other
   descriptor of the server is closed in it), with its pool's load board (``net.loadboard``:
   the sessions of each process, by which the IMAP and POP3 processes share out connections)
   when the pool has one.
2. Each worker runs with two pipes (``app.ipc``): its standard input, whose server end stays
   open while the server lives (end of file tells the worker the server is gone, even killed)
   and carries the server's ``Hello``; and its standard output, the worker's messages.
3. Its first line must be a ``Hello`` of this ``IPC_VERSION`` (``ipc.check_hello``); otherwise
   the worker is refused: logged, sent SIGTERM (SIGKILL after the stop grace), and treated as a
   worker that ended (rule 5). Past the handshake, a line that ``app.ipc`` refuses is logged
   with the worker's name and skipped, never a crash, and so is an exception of the handler.
4. ``Ready`` marks the worker ready: it listens, and handles SIGUSR1 and SIGHUP from then on.
   ``start`` returns once every worker is ready or has ended, or after ``READY_TIMEOUT``.
   ``Schedule``, ``Complete`` and ``Changed`` go to the handler.
5. When a worker ends, the handler's ``ended`` runs (the server drains its journal, queue rule
   10); unless the master is stopping, the worker is started again after a pause that starts
   at ``FIRST_RESTART_PAUSE`` and doubles up to ``MAX_RESTART_PAUSE`` — back to the first pause
   once a worker has been ready for ``STABLE_AFTER``, so that one crash a day is not punished
   with the pause of a crash loop. A command that cannot be run at all is retried the same way.
6. ``reload`` sends SIGHUP, ``flush`` SIGUSR1, to every ready worker (rule 4: a worker not yet
   ready reads the configuration as it starts, and has nothing held yet).
7. ``send`` writes a message to ready workers' standard input (``ipc.Changed`` to IMAP workers,
   ``app.hub``); a worker whose pipe holds more than ``MAX_SEND_BUFFER`` octets unread is
   skipped (the messages are hints: its sessions still poll), never waited for.
8. ``stop`` sends SIGTERM to every worker, waits ``stop_grace`` plus ``STOP_SLACK`` for them to
   finish their sessions, SIGKILLs what is left, and waits for every ``ended`` (rule 5).

What can go wrong: nothing raises out of the master once started; a worker that cannot start,
crashes, speaks another version or hangs at stop is logged and restarted or killed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pigeon.app import ipc

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0  # seconds for a worker to open its listeners (its imports take ~1 s)
FIRST_RESTART_PAUSE = 1.0  # rule 5
MAX_RESTART_PAUSE = 60.0
STABLE_AFTER = 60.0  # seconds ready after which a worker's next restart pauses FIRST_RESTART_PAUSE again
WORKER_STOP_GRACE = 10.0  # a worker's sessions and deliveries under way at stop, as the server's own
STOP_SLACK = 5.0  # rule 8: on top of the grace, for the worker's own closing
READ_SIZE = 65536
# Rule 7: ~16,000 change notices of ~60 octets; a worker that far behind is stuck, not busy.
MAX_SEND_BUFFER = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Rule 1. ``listen``: each service the worker serves, with the server's listening sockets
    for it (descriptors, inherited under the same numbers)."""

    pool: str
    index: int
    listen: tuple[tuple[str, tuple[int, ...]], ...]
    board: tuple[int, int] | None = None  # rule 1: (descriptor, slots) of the pool's load board

    @property
    def name(self) -> str:
        return f"{self.pool} worker {self.index}"

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(service for service, _ in self.listen)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        board = () if self.board is None else (self.board[0],)
        return tuple(fd for _, fds in self.listen for fd in fds) + board


Command = Callable[[WorkerSpec], Sequence[str]]  # the command line that runs a worker


@dataclass(frozen=True, slots=True)
class Pool:
    """Worker processes a configuration asks for: ``processes - 1`` workers (the server itself
    serves the same sockets too) for ``services``."""

    name: str
    services: tuple[str, ...]
    processes: int


class WorkerHandler(Protocol):
    def message(self, worker: WorkerSpec, msg: ipc.Notice) -> None:
        """A worker's ``Schedule``, ``Complete`` or ``Changed`` (rule 4)."""

    async def ended(self, worker: WorkerSpec) -> None:
        """The worker's process ended (rule 5): take over what it leaves."""


@dataclass(eq=False)
class _Worker:
    spec: WorkerSpec
    proc: asyncio.subprocess.Process | None = None
    ready_since: float | None = None  # monotonic time of its Ready, while it runs
    first: asyncio.Future[None] | None = None  # start(): ready or ended, the first time
    task: asyncio.Task[None] | None = None
    starts: list[float] = field(default_factory=list)  # monotonic start times (tests)

    def running(self) -> asyncio.subprocess.Process | None:
        return self.proc if self.proc is not None and self.proc.returncode is None else None


class Master:
    def __init__(self, specs: Sequence[WorkerSpec], command: Command, handler: WorkerHandler, *,
                 ready_timeout: float = READY_TIMEOUT, first_pause: float = FIRST_RESTART_PAUSE,
                 max_pause: float = MAX_RESTART_PAUSE, stable_after: float = STABLE_AFTER,
                 stop_grace: float = WORKER_STOP_GRACE, max_line: int = ipc.MAX_LINE) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names) or len({s.index for s in specs}) != len(specs):
            raise ValueError(f"worker indexes must be unique: {names}")
        self._workers = [_Worker(s) for s in specs]
        self._command = command
        self._handler = handler
        self.ready_timeout = ready_timeout
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.stable_after = stable_after
        self.stop_grace = stop_grace
        self.max_line = max_line
        self._stopping = asyncio.Event()

    # -- start and supervise (rules 2–5) --------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for w in self._workers:
            w.first = loop.create_future()
            w.task = asyncio.create_task(self._supervise(w), name=w.spec.name)
        firsts = [w.first for w in self._workers if w.first is not None]
        if firsts:
            _, pending = await asyncio.wait(firsts, timeout=self.ready_timeout)
            if pending:
                log.error("%d worker(s) not ready after %.0f s", len(pending), self.ready_timeout)

    async def _supervise(self, w: _Worker) -> None:
        pause = self.first_pause
        while not self._stopping.is_set():
            ready_for = await self._run_once(w)
            try:
                await self._handler.ended(w.spec)
            except Exception:
                log.exception("%s: taking over after its end failed", w.spec.name)
            if w.first is not None and not w.first.done():
                w.first.set_result(None)
            if self._stopping.is_set():
                return
            if ready_for >= self.stable_after:
                pause = self.first_pause
            log.info("%s restarts in %g s", w.spec.name, round(pause, 3))
            try:
                await asyncio.wait_for(self._stopping.wait(), pause)
            except TimeoutError:
                pass
            pause = min(pause * 2, self.max_pause)

    async def _run_once(self, w: _Worker) -> float:
        """One life of a worker; returns how long it was ready (0 if never)."""
        spec = w.spec
        w.starts.append(time.monotonic())
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(spec), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                pass_fds=spec.pass_fds)
        except OSError as exc:
            log.error("cannot start %s: %s", spec.name, exc)
            return 0.0
        w.proc = proc
        log.info("%s started pid=%d", spec.name, proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(ipc.encode(ipc.hello()))  # rule 2; the pipe's buffer takes it at once
        try:
            if not await self._read(w, proc):
                await self._terminate(w, proc)  # rule 3: refused
            rc = await proc.wait()
        finally:
            ready_for = time.monotonic() - w.ready_since if w.ready_since is not None else 0.0
            w.ready_since = None
            proc.stdin.close()
        stopping = self._stopping.is_set()
        log.log(logging.INFO if stopping else logging.ERROR, "%s pid=%d ended status=%s", spec.name, proc.pid, rc)
        return ready_for

    async def _read(self, w: _Worker, proc: asyncio.subprocess.Process) -> bool:
        """Rules 3 and 4, until end of file (True) or a refusal (False)."""
        assert proc.stdout is not None
        reader = ipc.worker_reader(self.max_line)
        greeted = False
        while True:
            data = await proc.stdout.read(READ_SIZE)
            for item in reader.feed(data) if data else reader.end():
                if not greeted:
                    try:
                        hello = ipc.check_hello(item if not isinstance(item, ipc.IpcError) else None)
                    except ipc.IpcError as exc:
                        why = item if isinstance(item, ipc.IpcError) else exc
                        log.error("%s pid=%d refused: %s", w.spec.name, proc.pid, why)
                        return False
                    greeted = True
                    log.debug("%s pid=%d speaks ipc version %d", w.spec.name, hello.pid, hello.version)
                elif isinstance(item, ipc.IpcError):
                    log.error("%s: refused a line on its pipe: %s", w.spec.name, item)
                else:
                    self._on_message(w, item)
            if not data:
                if not greeted:
                    log.error("%s pid=%d ended before its hello", w.spec.name, proc.pid)
                return True

    def _on_message(self, w: _Worker, msg: ipc.WorkerMessage) -> None:
        if isinstance(msg, ipc.Hello):
            log.error("%s: a second hello, ignored", w.spec.name)
        elif isinstance(msg, ipc.Ready):
            if w.ready_since is None:
                w.ready_since = time.monotonic()
                proc = w.running()
                log.info("%s ready pid=%s services=%s", w.spec.name, proc.pid if proc else "-", ",".join(msg.services))
            if w.first is not None and not w.first.done():
                w.first.set_result(None)
        else:
            try:
                self._handler.message(w.spec, msg)
            except Exception:
                log.exception("%s: acting on %s failed", w.spec.name, type(msg).__name__)

    async def _terminate(self, w: _Worker, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), self.stop_grace)
        except TimeoutError:
            log.warning("%s pid=%d did not stop; killing it", w.spec.name, proc.pid)
            proc.kill()

    # -- signals and stop (rules 6, 7) ----------------------------------------------------------

    def _signal_ready(self, sig: signal.Signals) -> int:
        n = 0
        for w in self._workers:
            proc = w.running()
            if proc is not None and w.ready_since is not None:
                proc.send_signal(sig)
                n += 1
        return n

    def reload(self) -> int:
        """Rule 6: SIGHUP to every ready worker; returns how many."""
        return self._signal_ready(signal.SIGHUP)

    def flush(self) -> int:
        """Rule 6: SIGUSR1 to every ready worker (``pigeon queue flush``); returns how many."""
        return self._signal_ready(signal.SIGUSR1)

    def send(self, msg: ipc.MasterMessage, to: Callable[[WorkerSpec], bool]) -> int:
        """Rule 7: ``msg`` to every ready worker ``to`` accepts; returns how many got it."""
        line = ipc.encode(msg)
        n = 0
        for w in self._workers:
            proc = w.running()
            if proc is None or w.ready_since is None or proc.stdin is None or not to(w.spec):
                continue
            transport = proc.stdin.transport
            if transport.is_closing():
                continue
            if transport.get_write_buffer_size() > MAX_SEND_BUFFER:
                log.warning("%s reads nothing from its pipe; %s not sent", w.spec.name, type(msg).__name__)
                continue
            proc.stdin.write(line)
            n += 1
        return n

    async def stop(self) -> None:
        """Rule 8."""
        self._stopping.set()
        for w in self._workers:
            proc = w.running()
            if proc is not None:
                proc.terminate()
        tasks = [w.task for w in self._workers if w.task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.stop_grace + STOP_SLACK)
        for w in self._workers:
            proc = w.running()
            if proc is not None:
                log.warning("%s pid=%d did not stop; killing it", w.spec.name, proc.pid)
                proc.kill()
        if pending:
            await asyncio.wait(pending, timeout=STOP_SLACK)

    # -- what the server and tests may ask -------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        return [p.pid for w in self._workers if (p := w.running()) is not None]

    def ready(self) -> list[WorkerSpec]:
        return [w.spec for w in self._workers if w.running() is not None and w.ready_since is not None]

    @property
    def specs(self) -> list[WorkerSpec]:
        """Every worker this master runs, ready or not (the health check, ``app.web``)."""
        return [w.spec for w in self._workers]

    def starts(self, index: int) -> list[float]:
        """Monotonic times at which worker ``index`` was started (tests of rule 5)."""
        return next((list(w.starts) for w in self._workers if w.spec.index == index), [])


def plan(pools: Sequence[Pool], sockets: Mapping[str, Sequence[int]],
         boards: Mapping[str, tuple[int, int]] | None = None) -> list[WorkerSpec]:
    """The workers for ``pools``: ``processes - 1`` each, indexes counted over every pool (rule
    1), each handed the server's listening sockets of its pool's services (``sockets``, by
    service) and its pool's load board (``boards``, by pool: descriptor and slots). A pool
    none of whose services has sockets gets no workers."""
    specs: list[WorkerSpec] = []
    index = 0
    for pool in pools:
        listen = tuple((svc, tuple(sockets[svc])) for svc in pool.services if sockets.get(svc))
        if not listen:
            continue
        for _ in range(pool.processes - 1):
            index += 1
            specs.append(WorkerSpec(pool.name, index, listen, (boards or {}).get(pool.name)))
    return specs
