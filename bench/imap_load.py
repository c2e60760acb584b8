#!/usr/bin/env python3
"""IMAP under concurrent load: Pigeon against Dovecot, the same messages, the same client, one run.

Workloads (issue 18), each run on every server in turn, the order alternating between runs:

| workload | what each client does | measured |
|---|---|---|
| mixed, N clients (10, 50) | connect, LOGIN once, SELECT INBOX, then for ``--duration`` s (30) one command after another, drawn with fixed weights: SELECT; FETCH of FLAGS (20 messages), ENVELOPE (10), BODY.PEEK[] (1), BODYSTRUCTURE (1); STORE of a flag and of a keyword (+/-); SEARCH (flags, header, keyword); APPEND (with \\Deleted, so the next EXPUNGE removes it and INBOX stays at its size); EXPUNGE; NOOP | commands/s over all clients; latency p50/p99 over every command; NO/BAD answers |
| login-heavy, 10 clients | for ``--login-duration`` s (20): connect, LOGIN, SELECT INBOX, FETCH 1:* FLAGS, LOGOUT, again | logins/s (complete cycles), LOGIN p50/p99 |

All commands address messages 1 … ``--messages`` (the messages dropped in before the start);
appended ones are only ever expunged, and they come after those, so every sequence number
used stays valid whatever the other clients do.

The load generator is this one Python process: asyncio streams, no threads, no imaplib, a
response parser that only looks for the tag and literal lengths. Its own CPU (user + system,
``getrusage``) is measured over each run and reported as a share of one core, and so is the
servers' CPU (utime + stime + cutime + cstime of the server's process tree from /proc, so
that Dovecot's per-connection processes that end are counted in their parent).

The servers (each its own instance on free loopback ports, started once, stopped by PID):
- **Dovecot** 2.3 (Debian's dovecot-imapd): ``bench/imap_bench.py``'s private instance (its own
  base_dir, log file, Maildir under WORKDIR, passwd-file with the password as ``doveadm pw -s
  ARGON2ID``), its default process model (a login process per connection, an imap process per
  session), plus its auth cache on as an admin would run it: ``auth_cache_size = 10M``,
  ``auth_cache_ttl = 1 hour``.
- **Pigeon** once per ``--pigeon-processes`` value (default ``1,2``): ``[imap] processes = N``,
  its verified-credential cache at its defaults (on, 10 min), argon2id hashes at argon2-cffi's
  defaults (docs/security.md).

Reproduce (as root, from the repository):
    python3 bench/imap_load.py                       # 3 runs, ~15 min
    python3 bench/imap_load.py --runs 1 --duration 10 --login-duration 10   # quick look
Results: stdout, and bench/results/imap-load-<date>.md + .json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import resource
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from imap_bench import (PASSWORD, USER, BenchServer, Dovecot, Pigeon, log, write_results,  # noqa: E402
                        login_select, make_messages)
from run import machine_info, proc_tree  # noqa: E402

LOGIN = b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode())
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
CLK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- servers

class LoadDovecot(Dovecot):
    """Dovecot with its auth cache on, as an admin would run it."""

    def setup(self, messages: list[tuple[str, bytes]]) -> None:
        super().setup(messages)
        conf = self.dir / "dovecot.conf"
        conf.write_text(conf.read_text() + "auth_cache_size = 10M\nauth_cache_ttl = 1 hour\n"
                        "auth_cache_negative_ttl = 0\n")


class LoadPigeon(Pigeon):
    def __init__(self, workdir: Path, cmd: list[str], processes: int) -> None:
        super().__init__(workdir, cmd)
        self.processes = processes
        self.name = f"pigeon-p{processes}"
        self.dir = workdir / self.name
        self.data = self.dir / "data"

    def setup(self, messages: list[tuple[str, bytes]]) -> None:
        super().setup(messages)
        if self.processes > 1:
            self.config.write_text(self.config.read_text() + f"[imap]\nprocesses = {self.processes}\n")

    def start(self, services: set[str]) -> None:
        """Started once its workers are ready too (the port opens before they are)."""
        super().start(services)
        log_file = self.dir / "serve.log"
        deadline = time.monotonic() + 60
        while b"pigeon started" not in log_file.read_bytes():
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                raise RuntimeError(f"{self.name} did not start: see {log_file}")
            time.sleep(0.05)


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s tree, ended children included (their parent's cutime)."""
    total = 0
    for p in proc_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK


def pid_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` itself (utime + stime), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def sessions_per_pid(root: int, port: int) -> dict[int, int]:
    """Established connections on local ``port`` held by each process of ``root``'s tree: how
    the sessions landed over a server's processes (a socket's inode in /proc/net/tcp*, matched
    to the processes' descriptors)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
                inodes.add(f[9])
    out: dict[int, int] = {}
    for p in proc_tree(root):
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        n = 0
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                n += 1
        if n:
            out[p] = n
    return out


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------- the lean client

class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.n = 0
        self.plus = False
        self.last = b""  # the last tagged completion

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting {greeting!r}")
        return cls(reader, writer)

    async def _until(self, tag: bytes) -> tuple[bytes, int]:
        """Read up to the tagged line; returns it and how many untagged lines came first."""
        count = 0
        while True:
            line = await self.r.readline()
            if not line:
                raise ConnectionError("closed")
            while line.endswith(b"}\r\n"):
                m = _LITERAL.search(line)
                if m is None:
                    break
                await self.r.readexactly(int(m.group(1)))
                line = await self.r.readline()
            if line.startswith(tag):
                self.last = line
                return line, count
            count += 1

    async def cmd(self, line: bytes) -> tuple[bool, int]:
        self.n += 1
        tag = b"c%d " % self.n
        self.w.write(tag + line + b"\r\n")
        done, count = await self._until(tag)
        return done[len(tag):].startswith(b"OK"), count

    async def append(self, data: bytes) -> bool:
        self.n += 1
        tag = b"c%d " % self.n
        head = tag + b"APPEND INBOX (\\Deleted $Bench) {%d%s}\r\n" % (len(data), b"+" if self.plus else b"")
        if self.plus:
            self.w.write(head + data + b"\r\n")
        else:
            self.w.write(head)
            cont = await self.r.readline()
            if not cont.startswith(b"+"):
                return False
            self.w.write(data + b"\r\n")
        done, _ = await self._until(tag)
        return done[len(tag):].startswith(b"OK")

    async def login(self) -> bool:
        ok, _ = await self.cmd(LOGIN)
        return ok

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except OSError:
            pass


# --------------------------------------------------------------------------- mixed workload

def mixed_ops(n: int) -> list[tuple[str, int]]:
    """(operation, weight); n = messages that are never expunged."""
    return [("select", 2), ("fetch_flags", 18), ("fetch_envelope", 14), ("fetch_body", 14),
            ("fetch_bodystructure", 10), ("store_flag", 10), ("store_keyword", 6), ("search", 8),
            ("append", 5), ("expunge", 3), ("noop", 10)]


async def mixed_client(port: int, n: int, seed: int, stop_at: float, sample: bytes,
                       lat: list[float], counts: dict[str, int], bad: list[str]) -> None:
    rnd = random.Random(seed)
    ops = mixed_ops(n)
    names = [o for o, _ in ops]
    weights = [w for _, w in ops]
    c = await Conn.open(port)
    try:
        if not await c.login():
            bad.append("LOGIN refused")
            return
        ok, _ = await c.cmd(b"CAPABILITY")
        c.plus = True  # both servers announce LITERAL+ (checked at setup)
        await c.cmd(b"SELECT INBOX")
        while time.monotonic() < stop_at:
            op = rnd.choices(names, weights)[0]
            x = rnd.randint(1, n - 20)
            if op == "select":
                line = b"SELECT INBOX"
            elif op == "fetch_flags":
                line = b"FETCH %d:%d (FLAGS)" % (x, x + 19)
            elif op == "fetch_envelope":
                line = b"FETCH %d:%d (ENVELOPE)" % (x, x + 9)
            elif op == "fetch_body":
                line = b"FETCH %d (BODY.PEEK[])" % x
            elif op == "fetch_bodystructure":
                line = b"FETCH %d (BODYSTRUCTURE)" % x
            elif op == "store_flag":
                line = b"STORE %d %sFLAGS (\\Flagged)" % (x, rnd.choice((b"+", b"-")))
            elif op == "store_keyword":
                line = b"STORE %d %sFLAGS ($Work)" % (x, rnd.choice((b"+", b"-")))
            elif op == "search":
                line = rnd.choice((b"SEARCH FLAGGED", b"SEARCH KEYWORD $Work", b'SEARCH FROM "user17"',
                                   b"SEARCH UNSEEN SINCE 1-Feb-2026"))
            elif op == "expunge":
                line = b"EXPUNGE"
            else:
                line = b"NOOP"
            t = time.perf_counter()
            if op == "append":
                ok = await c.append(sample)
            else:
                ok, _ = await c.cmd(line)
            lat.append(time.perf_counter() - t)
            counts[op] = counts.get(op, 0) + 1
            if not ok and len(bad) < 20:
                bad.append(f"{line[:60]!r} → {c.last[:120]!r}")
        await c.cmd(b"LOGOUT")
    finally:
        await c.close()


async def mixed(srv: BenchServer, clients: int, duration: float, n: int, sample: bytes, seed: int) -> dict[str, Any]:
    lat: list[float] = []
    counts: dict[str, int] = {}
    bad: list[str] = []
    root = srv.proc.pid  # type: ignore[union-attr]
    pids = proc_tree(root)
    per0 = {p: pid_cpu(p) for p in pids}
    cpu0, own0 = tree_cpu(root), own_cpu()
    t0 = time.monotonic()
    stop_at = t0 + duration
    landed: dict[int, int] = {}

    async def look() -> None:  # how the sessions landed, half way through
        await asyncio.sleep(duration / 2)
        landed.update(sessions_per_pid(root, srv.imap_port))
    looker = asyncio.ensure_future(look())
    results = await asyncio.gather(*(mixed_client(srv.imap_port, n, seed * 1000 + i, stop_at, sample, lat, counts, bad)
                                     for i in range(clients)), return_exceptions=True)
    wall = time.monotonic() - t0
    cpu1, own1 = tree_cpu(root), own_cpu()
    await looker
    # CPU % of each process that served sessions (Dovecot's per-session processes: their sum)
    per_pid = {p: 100 * (pid_cpu(p) - per0.get(p, 0.0)) / wall for p in pids}
    busy = sorted((round(v) for p, v in per_pid.items() if v >= 5), reverse=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    lat.sort()
    return {"cmds_per_s": len(lat) / duration, "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0,
            "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0, "commands": len(lat), "by_op": counts,
            "server_cpu_pct": 100 * (cpu1 - cpu0) / wall, "client_cpu_pct": 100 * (own1 - own0) / wall,
            "not_ok": bad, "errors": errors[:5],
            "sessions_per_process": sorted(landed.values(), reverse=True), "cpu_per_process_pct": busy}


# --------------------------------------------------------------------------- login-heavy

async def login_client(port: int, stop_at: float, lat: list[float], bad: list[str]) -> int:
    done = 0
    while time.monotonic() < stop_at:
        c = await Conn.open(port)
        try:
            t = time.perf_counter()
            ok = await c.login()
            lat.append(time.perf_counter() - t)
            if not ok:
                bad.append("LOGIN refused")
                continue
            await c.cmd(b"SELECT INBOX")
            _, lines = await c.cmd(b"FETCH 1:* (FLAGS)")
            await c.cmd(b"LOGOUT")
            if lines:
                done += 1
        finally:
            await c.close()
    return done


async def login_heavy(srv: BenchServer, clients: int, duration: float) -> dict[str, Any]:
    lat: list[float] = []
    bad: list[str] = []
    cpu0, own0 = tree_cpu(srv.proc.pid), own_cpu()  # type: ignore[union-attr]
    t0 = time.monotonic()
    results = await asyncio.gather(*(login_client(srv.imap_port, t0 + duration, lat, bad) for _ in range(clients)),
                                   return_exceptions=True)
    wall = time.monotonic() - t0
    cpu1, own1 = tree_cpu(srv.proc.pid), own_cpu()  # type: ignore[union-attr]
    cycles = sum(r for r in results if isinstance(r, int))
    lat.sort()
    return {"logins_per_s": cycles / wall, "cycles": cycles, "login_p50_ms": 1000 * lat[len(lat) // 2] if lat else 0,
            "login_p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0,
            "server_cpu_pct": 100 * (cpu1 - cpu0) / wall, "client_cpu_pct": 100 * (own1 - own0) / wall,
            "not_ok": bad[:5], "errors": [repr(r) for r in results if isinstance(r, BaseException)][:5]}


# --------------------------------------------------------------------------- report

def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    return f"{med(values):{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"


def report(meta: dict[str, Any], res: dict[str, dict[str, list[dict[str, Any]]]], servers: list[str]) -> str:
    out = [f"## IMAP under load, {meta['date']}", "", f"`{meta['command']}`", "",
           f"{meta['messages']:,} messages in INBOX; {meta['runs']} runs, median [min–max]; mixed {meta['duration']} s, "
           f"login-heavy {meta['login_duration']} s. Machine: {meta['machine']}. Load average at start: {meta['load']}.", ""]
    ref = "dovecot" if "dovecot" in servers else servers[0]
    for wl in meta["workloads"]:
        runs = {s: res[s].get(wl, []) for s in servers}
        if wl.startswith("mixed"):
            out += [f"### {wl} clients", "", "| server | commands/s | ratio to Dovecot | p50 ms | p99 ms | p99 ratio | "
                    "server CPU % | generator CPU % | not OK / errors |", "|---|---|---|---|---|---|---|---|---|"]
            for s in servers:
                rs = runs[s]
                cps = [r["cmds_per_s"] for r in rs]
                p99 = [r["p99_ms"] for r in rs]
                rc = med(cps) / med([r["cmds_per_s"] for r in runs[ref]]) if runs[ref] else float("nan")
                rp = med(p99) / med([r["p99_ms"] for r in runs[ref]]) if runs[ref] else float("nan")
                out.append(f"| {s} | {spread(cps, '.0f')} | {rc:.2f}× | {spread([r['p50_ms'] for r in rs], '.1f')} | "
                           f"{spread(p99, '.1f')} | {rp:.2f}× | {spread([r['server_cpu_pct'] for r in rs], '.0f')} | "
                           f"{spread([r['client_cpu_pct'] for r in rs], '.0f')} | "
                           f"{sum(len(r['not_ok']) for r in rs)} / {sum(len(r['errors']) for r in rs)} |")
        else:
            out += [f"### {wl}", "", "| server | logins/s | ratio to Dovecot | LOGIN p50 ms | LOGIN p99 ms | "
                    "server CPU % | generator CPU % | not OK / errors |", "|---|---|---|---|---|---|---|---|"]
            for s in servers:
                rs = runs[s]
                lps = [r["logins_per_s"] for r in rs]
                rc = med(lps) / med([r["logins_per_s"] for r in runs[ref]]) if runs[ref] else float("nan")
                out.append(f"| {s} | {spread(lps, '.1f')} | {rc:.2f}× | {spread([r['login_p50_ms'] for r in rs], '.1f')} | "
                           f"{spread([r['login_p99_ms'] for r in rs], '.1f')} | "
                           f"{spread([r['server_cpu_pct'] for r in rs], '.0f')} | "
                           f"{spread([r['client_cpu_pct'] for r in rs], '.0f')} | "
                           f"{sum(len(r['not_ok']) for r in rs)} / {sum(len(r['errors']) for r in rs)} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--login-duration", type=float, default=20.0)
    ap.add_argument("--clients", default="10,50")
    ap.add_argument("--login-clients", type=int, default=10)
    ap.add_argument("--pigeon-processes", default="1,2")
    ap.add_argument("--servers", default="pigeon,dovecot")
    ap.add_argument("--skip", default="", help="comma list of: mixed,login")
    ap.add_argument("--workdir", default="/tmp/pigeon-bench-imap-load")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the servers are stopped in `finally`
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = str(REPO / "src")  # this checkout's pigeon, in the server and its workers
    cmd = [sys.executable, "-m", "pigeon"]
    wanted = a.servers.split(",")
    servers: list[BenchServer] = []
    if "pigeon" in wanted:
        servers += [LoadPigeon(workdir, cmd, int(p)) for p in a.pigeon_processes.split(",")]
    if "dovecot" in wanted:
        Dovecot.ensure_installed()
        servers.append(LoadDovecot(workdir))
    skip = set(filter(None, a.skip.split(",")))
    workloads = ([f"mixed {c}" for c in a.clients.split(",")] if "mixed" not in skip else []) + \
                ([f"login-heavy {a.login_clients}"] if "login" not in skip else [])
    messages = make_messages(a.messages)
    sample = messages[0][1].replace(b"\n", b"\r\n")
    res: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in servers}
    versions: dict[str, str] = {}
    load = os.getloadavg()
    try:
        for s in servers:
            log(f"{s.name}: setup and start")
            s.setup(messages)
            versions[s.name] = s.version()
            s.start({"imap"})
            secs, exists = login_select(s.imap_port)  # the cold index build, not timed
            log(f"{s.name}: cold LOGIN+SELECT {secs:.2f} s, {exists} messages")

            async def warm(port: int = s.imap_port) -> None:
                c = await Conn.open(port)
                await c.login()
                _, caps = await c.cmd(b"CAPABILITY")
                await c.cmd(b"SELECT INBOX")
                await c.cmd(b"FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE)")
                await c.cmd(b"LOGOUT")
                await c.close()
            asyncio.run(warm())
        for run in range(a.runs):
            order = servers if run % 2 == 0 else servers[::-1]
            for wl in workloads:
                for s in order:
                    log(f"{s.name}: {wl}, run {run + 1}")
                    if wl.startswith("mixed"):
                        got = asyncio.run(mixed(s, int(wl.split()[1]), a.duration, a.messages, sample, run))
                        log(f"  {got['cmds_per_s']:.0f} cmd/s p99 {got['p99_ms']:.1f} ms server CPU "
                            f"{got['server_cpu_pct']:.0f}% generator {got['client_cpu_pct']:.0f}% {got['not_ok'][:2]} {got['errors'][:2]}")
                        if s.name.startswith("pigeon"):
                            log(f"  sessions per process {got['sessions_per_process']}, CPU % per process "
                                f"{got['cpu_per_process_pct']}")
                    else:
                        got = asyncio.run(login_heavy(s, a.login_clients, a.login_duration))
                        log(f"  {got['logins_per_s']:.1f} logins/s LOGIN p99 {got['login_p99_ms']:.1f} ms server CPU "
                            f"{got['server_cpu_pct']:.0f}% generator {got['client_cpu_pct']:.0f}% {got['not_ok'][:2]} {got['errors'][:2]}")
                    res[s.name].setdefault(wl, []).append(got)
    finally:
        for s in servers:
            s.stop()
    meta = {"date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "command": "python3 bench/imap_load.py " + " ".join(sys.argv[1:]),
            "messages": a.messages, "runs": a.runs, "duration": a.duration, "login_duration": a.login_duration,
            "workloads": workloads, "versions": versions, "load": " ".join(f"{x:.1f}" for x in load),
            "machine": ", ".join(f"{k}: {v}" for k, v in machine_info(workdir).items())}
    text = report(meta, res, [s.name for s in servers])
    print(text)
    write_results(Path(a.out), f"imap-load-{meta['date'][:10]}", text, {"meta": meta, "results": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
