#!/usr/bin/env python3
"""A small asyncio SMTP load generator, the second opinion beside Postfix's smtp-source.

It does what ``smtp-source -s SESSIONS -m MESSAGES -F FILE -f FROM -t TO HOST:PORT`` does:
SESSIONS concurrent clients share one counter of MESSAGES; each message goes over a fresh
connection (``--reuse`` keeps a connection for several messages, like ``smtp-source -d``).
No pipelining (smtp-source has none either): each command waits for its reply.

It also has an ``idle`` mode for the memory test: open N connections, read each greeting, hold
them open for a while, then QUIT and close.

Rules:
  1. Only loopback targets (127.0.0.0/8, ::1, localhost): anything else is refused before any
     connection is made.
  2. Every run is bounded in count (MESSAGES / N) and in time (``--timeout``); when the time is up
     the clients stop and the run is reported as incomplete.
  3. A message counts as accepted only when the server answered 2xx to the end of DATA.
     Any other reply counts as a failure (and the connection is dropped, like ``smtp-source``
     without ``-A`` would stop).

Output (``--json``): {"sent": ok, "failed": n, "elapsed": s, "rate": ok/s, "latency_ms": {...}}.

Usage:
  python3 bench/smtpload.py send --port 2526 -s 10 -m 1000 --size 1024
  python3 bench/smtpload.py send --port 2526 -s 10 -m 1000 --file msg.eml --json
  python3 bench/smtpload.py send --port 2526 -s 10 -m 1000 --file signed.eml --source 127.0.0.5
  python3 bench/smtpload.py idle --port 2526 -n 1000 --hold 5
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def check_loopback(host: str) -> None:
    """Refuse any target that is not a loopback address (rule 1)."""
    if host.lower() in LOOPBACK_NAMES:
        return
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise SystemExit(f"smtpload: refusing non-loopback target {host!r} (use 127.0.0.1)")
    if not addr.is_loopback:
        raise SystemExit(f"smtpload: refusing non-loopback target {host!r}")


def make_message(size: int, sender: str = "from@bench.test", to: str = "bench@bench.test",
                 seed: int = 1) -> bytes:
    """A deterministic RFC 5322 message of exactly ``size`` bytes on the wire (CRLF endings).

    Returned with LF line endings (what ``smtp-source -F`` reads: it appends CRLF to each line),
    so ``len(msg) + msg.count(b"\\n") == size`` whenever ``size`` is large enough for the headers.
    No Message-ID: the same file is sent many times, and each server adds its own.
    """
    header = (
        f"From: Bench Sender <{sender}>\n"
        f"To: <{to}>\n"
        f"Subject: pigeon benchmark message of {size} bytes\n"
        "Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
    )
    wire = len(header) + header.count("\n")
    rng = random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    lines: list[str] = []
    remaining = size - wire
    while remaining > 0:
        # A line of n characters costs n + 2 on the wire; lines never start with ".".
        n = min(76, remaining - 2)
        if n < 1:
            # 1 byte left over: extend the previous line by one character.
            if lines:
                lines[-1] += "A"
            remaining = 0
            break
        lines.append("".join(rng.choice(alphabet) for _ in range(n)))
        remaining -= n + 2
    return (header + "".join(line + "\n" for line in lines)).encode("ascii")


def to_wire(message: bytes) -> bytes:
    """LF → CRLF, dot-stuffed (RFC 5321 §4.5.2), terminated with CRLF.CRLF."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line + b"\r\n"
    out += b".\r\n"
    return bytes(out)


class SMTPError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (possibly multi-line) reply: (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPError("connection closed by server")
        if len(line) < 4:
            raise SMTPError(f"short reply {line!r}")
        if line[3:4] != b"-":
            try:
                return int(line[:3]), line.rstrip()
            except ValueError:
                raise SMTPError(f"bad reply {line!r}") from None


async def expect(reader: asyncio.StreamReader, ok: Callable[[int], bool], what: str) -> None:
    code, line = await read_reply(reader)
    if not ok(code):
        raise SMTPError(f"{what}: {line.decode(errors='replace')}")


def is2(c: int) -> bool:
    return 200 <= c < 300


@dataclass
class Stats:
    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def error(self, e: BaseException) -> None:
        self.failed += 1
        key = f"{type(e).__name__}: {e}"[:120]
        self.errors[key] = self.errors.get(key, 0) + 1


async def session(host: str, port: int, wire: bytes, sender: str, rcpts: list[str],
                  budget: list[int], stats: Stats, reuse: bool, helo: str,
                  source: str | None = None) -> None:
    """One client: take messages from the shared budget until it is empty."""
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    ri = 0
    try:
        while budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(
                        host, port, local_addr=(source, 0) if source else None)
                    await expect(reader, is2, "greeting")
                    writer.write(f"EHLO {helo}\r\n".encode())
                    await expect(reader, is2, "EHLO")
                assert reader is not None
                writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
                await expect(reader, is2, "MAIL")
                writer.write(f"RCPT TO:<{rcpts[ri % len(rcpts)]}>\r\n".encode())
                ri += 1
                await expect(reader, is2, "RCPT")
                writer.write(b"DATA\r\n")
                await expect(reader, lambda c: c == 354, "DATA")
                writer.write(wire)
                await expect(reader, is2, "end of DATA")
                stats.sent += 1
                stats.latencies.append(time.perf_counter() - t0)
                if not reuse:
                    writer.write(b"QUIT\r\n")
                    try:
                        await asyncio.wait_for(read_reply(reader), 5)
                    except (SMTPError, OSError, asyncio.TimeoutError):
                        pass
                    writer.close()
                    writer = None
            except (SMTPError, OSError, asyncio.IncompleteReadError) as e:
                stats.error(e)
                if writer is not None:
                    writer.close()
                    writer = None
    finally:
        if writer is not None and reader is not None:
            try:
                writer.write(b"QUIT\r\n")
                await asyncio.wait_for(read_reply(reader), 5)
            except (SMTPError, OSError, asyncio.TimeoutError):
                pass
            writer.close()


async def send_load(host: str, port: int, message: bytes, sessions: int, messages: int,
                    sender: str, rcpts: list[str], timeout: float, reuse: bool = False,
                    helo: str = "smtpload.bench.test", source: str | None = None) -> dict[str, object]:
    """Send ``messages`` copies of ``message`` over ``sessions`` concurrent clients
    (from the loopback address ``source`` when given, e.g. 127.0.0.5 for an SPF record)."""
    check_loopback(host)
    if source is not None:
        check_loopback(source)
    wire = to_wire(message)
    stats = Stats()
    budget = [messages]
    m0 = time.monotonic()  # CLOCK_MONOTONIC is system-wide: the harness compares it across processes
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(session(host, port, wire, sender, rcpts, budget, stats, reuse, helo,
                                         source))
             for _ in range(min(sessions, messages))]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    budget[0] = 0
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if t.exception() is not None:
            stats.error(t.exception())  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    m1 = time.monotonic()
    lat = sorted(stats.latencies)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else 0.0

    return {
        "generator": "smtpload",
        "sessions": sessions,
        "messages": messages,
        "size": len(wire) - 3,
        "sent": stats.sent,
        "failed": stats.failed,
        "timed_out": bool(pending),
        "elapsed": elapsed,
        "t_start": m0,
        "t_end": m1,
        "rate": stats.sent / elapsed if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
            "mean": round(1000 * statistics.fmean(lat), 2) if lat else 0.0,
        },
        "errors": stats.errors,
    }


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard) if hard != resource.RLIM_INFINITY else max(soft, n)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class IdleSessions:
    """N open SMTP connections that have each read their greeting (for the memory test).

    Use inside one event loop: ``await open()``, measure, ``await close()``.
    """

    def __init__(self, host: str, port: int, count: int, connect_concurrency: int = 100,
                 timeout: float = 60.0) -> None:
        check_loopback(host)
        self.host, self.port, self.count = host, port, count
        self.connect_concurrency = connect_concurrency
        self.timeout = timeout
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.failed = 0
        self.elapsed = 0.0

    async def _one(self, sem: asyncio.Semaphore) -> None:
        async with sem:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout)
                code, _ = await asyncio.wait_for(read_reply(reader), self.timeout)
                if code != 220:
                    raise SMTPError(f"greeting {code}")
                self.conns.append((reader, writer))
            except (OSError, SMTPError, asyncio.TimeoutError):
                self.failed += 1
                if writer is not None:
                    writer.close()

    async def open(self) -> None:
        raise_nofile(self.count + 256)
        sem = asyncio.Semaphore(self.connect_concurrency)
        t0 = time.perf_counter()
        await asyncio.gather(*(self._one(sem) for _ in range(self.count)))
        self.elapsed = time.perf_counter() - t0

    async def close(self) -> None:
        for _, w in self.conns:
            try:
                w.write(b"QUIT\r\n")
            except OSError:
                pass
            w.close()
        await asyncio.gather(*(w.wait_closed() for _, w in self.conns), return_exceptions=True)
        self.conns.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description="asyncio SMTP load generator (loopback only)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send", help="send messages")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("-s", "--sessions", type=int, default=1)
    s.add_argument("-m", "--messages", type=int, default=100)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--size", type=int, default=1024, help="message size in bytes (default 1024)")
    g.add_argument("--file", help="send this message file (LF or CRLF endings)")
    s.add_argument("-f", "--sender", default="from@bench.test")
    s.add_argument("-t", "--to", action="append", help="recipient (repeat to rotate)")
    s.add_argument("--reuse", action="store_true", help="several messages per connection")
    s.add_argument("--source", help="bind the clients to this loopback address (e.g. 127.0.0.5)")
    s.add_argument("--helo", default="smtpload.bench.test", help="the EHLO name")
    s.add_argument("--timeout", type=float, default=120.0, help="time limit in seconds")
    s.add_argument("--json", action="store_true")
    i = sub.add_parser("idle", help="hold N idle sessions open")
    i.add_argument("--host", default="127.0.0.1")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("-n", "--count", type=int, default=1000)
    i.add_argument("--hold", type=float, default=5.0, help="seconds to hold (max 600)")
    args = ap.parse_args()

    if args.cmd == "send":
        rcpts = args.to or ["bench@bench.test"]
        if args.file:
            with open(args.file, "rb") as f:
                message = f.read()
        else:
            message = make_message(args.size, args.sender, rcpts[0])
        raise_nofile(args.sessions + 256)
        res = asyncio.run(send_load(args.host, args.port, message, args.sessions, args.messages,
                                    args.sender, rcpts, args.timeout, args.reuse, args.helo,
                                    args.source))
        if args.json:
            print(json.dumps(res))
        else:
            print(f"sent {res['sent']} failed {res['failed']} in {res['elapsed']:.2f} s: "
                  f"{res['rate']:.1f} msg/s; latency ms {res['latency_ms']}")
            for k, v in dict(res["errors"]).items():  # type: ignore[call-overload]
                print(f"  {v} × {k}")
        sys.exit(0 if res["failed"] == 0 and not res["timed_out"] else 1)
    else:
        async def hold() -> None:
            idle = IdleSessions(args.host, args.port, args.count)
            await idle.open()
            print(f"{len(idle.conns)} sessions open ({idle.failed} failed) in {idle.elapsed:.2f} s;"
                  f" holding {min(args.hold, 600)} s", flush=True)
            await asyncio.sleep(min(args.hold, 600))
            await idle.close()

        asyncio.run(hold())


if __name__ == "__main__":
    main()
