"""The server's side of the SMTP worker processes (``[smtp] processes``; see ``smtpd.worker``).

Rules:
1. ``start`` runs ``processes - 1`` workers (``python -m pigeon … smtp-worker --index I
   --listen-fds …``, the server's own listening sockets passed down) and returns once each
   has said it listens (or ended). Each worker's standard input is a pipe
   kept open by the server: when the server dies, the workers see end of file and stop.
2. What a worker says on its pipe is acted on here: ``schedule`` → the queue manager takes the
   message from the queue files; ``complete`` → its attempt's results are recorded as the
   queue manager's own; ``changed`` → IMAP IDLE sessions on that Maildir are woken. A line
   that cannot be understood is logged and skipped; the message it was about is in the queue
   files and is delivered at the next start at the latest.
3. When a worker ends, whatever its intake journal still holds is moved into the queue files
   and scheduled (queue rule 10). Unless the server is stopping, the worker is started again
   after a pause that doubles up to ``MAX_RESTART_PAUSE``.
4. ``stop`` sends SIGTERM to every worker, waits for them (their sessions' grace period), kills
   what is left, and drains their journals.
5. ``flush_held`` (``pigeon queue flush``) sends SIGUSR1 to every worker that said it is ready
   (it handles the signal from then on): each tries its fast lane's held messages at once
   (``delivery.fastlane`` Rule 6).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path

from pigeon.core.address import AddressError, parse_address
from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.core.results import RecipientResult
from pigeon.proto.smtp.reply import Reply
from pigeon.queue.record import QueueRecord, RcptState
from pigeon.queue.store import QueueStore, QueueWriteError, RecordNotFound
from pigeon.smtpd.worker import STOP_GRACE, journal_owner
from pigeon.store.changes import ChangeNotifier

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0  # seconds for a worker to open its listeners (an import takes ~1 s)
FIRST_RESTART_PAUSE = 1.0
MAX_RESTART_PAUSE = 60.0
MAX_LINE = 1024 * 1024  # a results line for 1,000 recipients is ~150 KiB

Results = list[tuple[RcptState, RecipientResult]]


class SmtpWorkers:
    def __init__(self, count: int, config_file: str | None, queue: QueueStore,
                 schedule: Callable[[QueueRecord], None],
                 complete: Callable[[QueueRecord, Results], Coroutine[object, object, None]],
                 changes: ChangeNotifier, listen_fds: list[int] | None = None) -> None:
        self.count = count
        self._listen_fds = listen_fds or []  # the server's smtp sockets, shared with the workers
        self._config_file = config_file
        self._queue = queue
        self._schedule = schedule
        self._complete = complete
        self._changes = changes
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._ready: set[int] = set()  # Rule 5: workers (indexes) that said "ready"
        self._stopping = False

    async def start(self) -> None:
        ready = []
        for index in range(1, self.count):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._tasks[index] = asyncio.create_task(self._supervise(index, fut), name=f"smtp-worker-{index}")
            ready.append(fut)
        if ready:
            done, pending = await asyncio.wait(ready, timeout=READY_TIMEOUT)
            if pending:
                log.error("%d smtp worker(s) not ready after %.0f s", len(pending), READY_TIMEOUT)

    def _command(self, index: int) -> list[str]:
        cmd = [sys.executable, "-m", "pigeon"]
        if self._config_file is not None:
            cmd += ["--config", self._config_file]
        cmd += ["smtp-worker", "--index", str(index)]
        if self._listen_fds:
            cmd += ["--listen-fds", ",".join(str(fd) for fd in self._listen_fds)]
        return cmd

    async def _supervise(self, index: int, ready: asyncio.Future[None]) -> None:
        pause = FIRST_RESTART_PAUSE
        while not self._stopping:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self._command(index), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    limit=MAX_LINE, pass_fds=self._listen_fds)
            except OSError as exc:
                log.error("cannot start smtp worker %d: %s", index, exc)
                proc = None
            if proc is not None:
                self._procs[index] = proc
                log.info("smtp worker %d started pid=%d", index, proc.pid)
                await self._read(index, proc, ready)
                rc = await proc.wait()
                self._procs.pop(index, None)
                self._ready.discard(index)
                if proc.stdin is not None:
                    proc.stdin.close()
                log.log(logging.INFO if self._stopping else logging.ERROR,
                        "smtp worker %d pid=%d ended status=%s", index, proc.pid, rc)
            await self._drain(index)
            if not ready.done():
                ready.set_result(None)
            if self._stopping:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RESTART_PAUSE)

    async def _read(self, index: int, proc: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # over MAX_LINE: skip to the next newline
                log.error("smtp worker %d: an over-long line on its pipe, skipped", index)
                continue
            if not line:
                return
            try:
                msg = json.loads(line)
                op = msg["op"]
            except (ValueError, KeyError, TypeError):
                log.error("smtp worker %d: unreadable line on its pipe: %r", index, line[:200])
                continue
            if op == "ready":
                self._ready.add(index)
                if not ready.done():
                    ready.set_result(None)
            elif op == "changed" and isinstance(msg.get("dir"), str):
                self._changes.notify(Path(msg["dir"]))
            elif op in ("schedule", "complete"):
                self._message(index, op, msg)
            else:
                log.error("smtp worker %d: unknown request %r", index, op)

    def _message(self, index: int, op: str, msg: dict[str, object]) -> None:
        qid = msg.get("id")
        if not isinstance(qid, str) or not is_queue_id(qid):
            log.error("smtp worker %d: %s without a queue id", index, op)
            return
        try:
            record = self._queue.load(QueueId(qid))
        except (RecordNotFound, OSError, ValueError) as exc:
            log.error("smtp worker %d: %s %s: %s", index, op, qid, exc)
            return
        results = _decode_results(record, msg.get("results")) if op == "complete" else None
        if results is None:
            if op == "complete":
                log.error("smtp worker %d: unreadable results for %s; delivering it again", index, qid)
            self._schedule(record)
            return
        task = asyncio.create_task(self._complete(record, results))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drain(self, index: int) -> None:
        """Rule 3: the ended worker's journal into the queue files, then scheduled."""
        try:
            moved = await asyncio.to_thread(self._queue.drain_journal, journal_owner(index))
        except (OSError, QueueWriteError) as exc:  # a full disk too: the worker is restarted all the same
            log.error("smtp worker %d: draining its journal failed: %s (the next start does it)", index, exc)
            return
        for qid in moved:
            try:
                self._schedule(self._queue.load(qid))
            except (RecordNotFound, OSError, ValueError) as exc:
                log.error("smtp worker %d: %s from its journal: %s", index, qid, exc)
        if moved:
            log.info("smtp worker %d: %d messages taken over from its journal", index, len(moved))

    def reload(self) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGHUP)

    def flush_held(self) -> None:
        """Rule 5."""
        for index, proc in self._procs.items():
            if proc.returncode is None and index in self._ready:
                proc.send_signal(signal.SIGUSR1)

    async def stop(self) -> None:
        """Rule 4."""
        self._stopping = True
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE + 5)
            for index, proc in list(self._procs.items()):
                if proc.returncode is None:
                    log.warning("smtp worker %d pid=%d did not stop; killing it", index, proc.pid)
                    proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._background:
            await asyncio.wait(set(self._background), timeout=STOP_GRACE)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.returncode is None]


def _decode_results(record: QueueRecord, raw: object) -> Results | None:
    if not isinstance(raw, list):
        return None
    by_key = {r.address.key: r for r in record.rcpts}
    out: Results = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 6):
            return None
        address, status, code, enhanced, lines, host = item
        if not (isinstance(address, str) and status in ("delivered", "deferred", "failed")
                and isinstance(code, int) and isinstance(enhanced, str) and isinstance(lines, list)
                and all(isinstance(x, str) for x in lines) and isinstance(host, str)):
            return None
        try:
            addr = parse_address(address, utf8=True)
        except AddressError:
            return None
        rcpt = by_key.get(addr.key)
        if rcpt is None:
            return None
        text: str | tuple[str, ...] = lines[0] if len(lines) == 1 else tuple(lines)
        out.append((rcpt, RecipientResult(addr, status, Reply(code, enhanced, text), host)))
    return out if len(out) == len(record.rcpts) else None
