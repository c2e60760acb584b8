#!/usr/bin/env python3
"""Many IDLE sessions: total server memory, and how fast a delivery wakes every one (issue 18).

What it measures, for each server in turn (never both running at once), ``--runs`` times with
the order alternating:

1. **Memory.** ``--sessions`` IMAP sessions (10,000; ``--quick``: 1,000), spread over ``--users``
   accounts (100, so 100 sessions per account: a phone, a desktop client's five connections and
   so on, many times over), each: LOGIN, SELECT INBOX, IDLE, then nothing. After ``--settle``
   seconds (10) the PSS of every server process is summed (``/proc/PID/smaps_rollup``: PSS, not
   RSS, so a page shared by 10,000 Dovecot processes counts once in all): Dovecot's master,
   imap-login, auth, config, log, anvil, stats and every imap process; Pigeon's server and its
   workers (the process we started and all its descendants). The same sum before the sessions
   gives the empty server, and (with − without) ÷ sessions the cost of one session. The server's
   CPU time during the settle window is reported too (what 10,000 idle sessions cost while
   nothing happens).
2. **Wake-up.** One message is then delivered to every account at once, at time t0: for Pigeon
   one SMTP transaction on its port 25 listener with one RCPT per account (the real path:
   intake, queue, local delivery into the Maildir, change notice); for Dovecot the message is
   written into each account's Maildir ``tmp/`` and renamed into ``new/`` (what an LDA does;
   Dovecot's imap processes learn of it through inotify). Every session records when its
   ``* N EXISTS`` arrives; reported: p50, p99 and max of (arrival − t0) over all sessions, and
   how many did not get it within 1 s (and within ``--wait``, 35 s). For Pigeon also counted
   from the end of the SMTP transaction (the 250 after DATA) and from each session's own
   account's delivery into its Maildir (the server's ``delivered … relay=local`` log line).
   ``--pigeon-processes N``: Pigeon with ``[imap] processes = N``.

The client: ``--clients`` processes (4) share the sessions; each is one asyncio loop with one
task per session. Their CPU time is reported (total, and during the wake-up window) so that a
starved client would show. ``time.monotonic`` is the one clock (CLOCK_MONOTONIC is system-wide).

The servers (loopback only, their own directories under ``--workdir``, started and stopped by
PID; the bench process raises its open-file limit to ``NOFILE`` and the servers inherit it):

- **Pigeon**: ``pigeon serve`` of this checkout (``PYTHONPATH=src``), IMAP and SMTP on free
  loopback ports, ``[auth] allow_plaintext_on_loopback = true``, ``[limits] max_connections`` and
  ``max_connections_per_ip`` = sessions + 1,000 (its open-file rule, ``net.fdlimit``: 2 files a
  connection + 256 must fit in the limit), port-25 checks trusting 127.0.0.1 (as bench/run.py).
  The accounts come from ``pigeon user import`` of the same passwd-file Dovecot reads.
- **Dovecot 2.3** (Debian's dovecot-imapd): ``dovecot -F -c`` with its own config, base_dir,
  state and log; a passwd-file whose every account has the same hash (``doveadm pw -s
  ARGON2ID``) and its own uid (``VUID_BASE`` + i: an imap process runs as its user, and the
  kernel allows 128 inotify instances per uid by default, so 100 sessions per uid keep
  Dovecot's instant IDLE wake-up without changing a sysctl of this shared machine); auth cache
  on; ``mail_location = maildir:``. Its process model is the default one, one ``imap`` process
  per session (Dovecot 2.3 documents ``service imap { client_limit = 1 }`` as the only
  recommended value for mail processes), with the limits raised as an admin serving 10,000
  clients would (``DOVECOT_LIMITS`` below: written in the config the harness prints).
  ``--dovecot-hibernate`` adds what Dovecot documents for many IDLE clients:
  ``imap_hibernate_timeout = 5s`` moves an IDLE session out of its imap process into the one
  ``imap-hibernate`` process.

Reproduce (as root, from the repository, with the project's venv):
``PYTHONPATH=src .venv/bin/python bench/idle_bench.py`` (10,000 sessions, 3 runs, ~15 min);
``--quick`` (1,000 sessions over 10 accounts; add ``--runs 1`` for one run). Results: stdout and bench/results/idle-<date>.md/.json.

What can go wrong: a session that fails to open is counted and reported (the first errors
shown); a server that dies is reported as failed for that run; the servers are always stopped
(SIGTERM to the PID we started, SIGKILL after 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from imap_bench import free_port, log, wait_port, write_results  # noqa: E402
from run import cpu_seconds, machine_info, mem_kib, proc_tree  # noqa: E402

DOMAIN = "idle.test"
PASSWORD = "idle-bench-password-not-secret"
SENDER = "sender@elsewhere.example"
VUID_BASE = 3000  # Dovecot: account i runs as uid VUID_BASE + i (no passwd entry needed)
#: Open files for the bench and the servers it starts (inherited): 10,000 sessions need 10,000
#: client sockets plus, for Pigeon, 2 per connection (net.fdlimit) and, for Dovecot, the master's
#: pipes to 10,000 imap processes.
NOFILE = 65536
#: Dovecot's limits for 10,000 sessions (the defaults: 100 processes per service, 1,000 clients
#: per process, 10 connections per user and IP).
DOVECOT_LIMITS = """\
default_process_limit = 12000
default_client_limit = 15000
default_vsz_limit = 256M
mail_max_userip_connections = 1000
auth_cache_size = 10M
auth_cache_ttl = 1 hour
service imap-login {{
  # high-performance login mode (doc.dovecot.org, login processes): few processes, many clients
  service_count = 0
  process_min_avail = 2
  client_limit = 5000
  process_limit = 10
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 12000
  client_limit = 1
}}
service anvil {{
  client_limit = 15000
}}
service stats {{
  client_limit = 15000
}}
service auth {{
  client_limit = 15000
}}
"""
HIBERNATE = """\
imap_hibernate_timeout = 5s
service imap {
  unix_listener imap-master {
    user = $default_internal_user
  }
  extra_groups = $default_internal_group
}
service imap-hibernate {
  client_limit = 20000
  unix_listener imap-hibernate {
    mode = 0660
    group = $default_internal_group
  }
}
"""


def users(n: int) -> list[str]:
    return [f"u{i:04d}@{DOMAIN}" for i in range(n)]


def raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n), max(hard, n)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log(f"open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)}")


def password_hash(scheme: str) -> str:
    """One hash for every account of both servers, made by ``doveadm pw -s SCHEME``."""
    out = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", PASSWORD], capture_output=True,
                         text=True, timeout=120).stdout.strip()
    if not out.startswith("{" + scheme + "}"):
        raise RuntimeError(f"doveadm pw -s {scheme} gave {out!r}")
    return out


def pigeon_fits(nofile: int) -> int:
    """The most connections Pigeon's open-file rule (``net.fdlimit`` rule 2) accepts in ``nofile``."""
    sys.path.insert(0, str(REPO / "src"))
    from pigeon.net.fdlimit import FD_RESERVE, FDS_PER_CONNECTION

    return (nofile - FD_RESERVE) // FDS_PER_CONNECTION


def message(to: str, n: int) -> bytes:
    return (f"From: Sender <{SENDER}>\r\nTo: <{to}>\r\nSubject: wake up {n}\r\n"
            f"Message-ID: <wake.{n}.{time.time_ns()}@elsewhere.example>\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n\r\n"
            "One message for every IDLE session.\r\n").encode()


# --------------------------------------------------------------------------- servers

class Server:
    name = "?"
    proc: subprocess.Popen[bytes] | None = None
    logf: Any = None
    imap_port = 0
    settings = ""

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def memory(self) -> dict[str, int]:
        pids = self.pids()
        rss = pss = 0
        for p in pids:
            r, s = mem_kib(p)
            rss += r
            pss += s
        return {"rss_kib": rss, "pss_kib": pss, "procs": len(pids)}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                log(f"{self.name} pid {self.proc.pid} ignored SIGTERM for 30 s; SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self.logf is not None:
            self.logf.close()
            self.logf = None

    def setup(self, accounts: list[str], hashed: str, sessions: int) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def deliver(self, accounts: list[str], n: int) -> float:
        """Deliver one message to every account; returns t0 (monotonic, before the first byte)."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


class Pigeon(Server):
    name = "pigeon"

    def __init__(self, workdir: Path, python: str, processes: int = 1) -> None:
        self.processes = processes
        self.smtp_done = 0.0  # monotonic: the 250 after DATA (the end of the SMTP transaction)
        self.dir = workdir / "pigeon"
        self.data = self.dir / "data"
        self.cmd = [python, "-m", "pigeon.admin.cli"]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))

    def version(self) -> str:
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        return f"Pigeon {rev or '?'}"

    def setup(self, accounts: list[str], hashed: str, sessions: int) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.data.mkdir(parents=True)
        self.imap_port, self.smtp_port = free_port(), free_port()
        limit = min(sessions + 1000, pigeon_fits(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
        self.config = self.dir / "pigeon.toml"
        self.settings = (
            f'hostname = "pigeon.{DOMAIN}"\ndata_dir = "{self.data}"\ndomains = ["{DOMAIN}"]\n'
            '[inbound]\ntrusted_networks = ["127.0.0.1/32"]\n'
            "[auth]\nallow_plaintext_on_loopback = true\n"
            f'[listen]\nsmtp = ["127.0.0.1:{self.smtp_port}"]\nimap = ["127.0.0.1:{self.imap_port}"]\n'
            f"[limits]\nmax_connections = {limit}\nmax_connections_per_ip = {limit}\n"
            + (f"[imap]\nprocesses = {self.processes}\n" if self.processes > 1 else ""))
        self.config.write_text(self.settings)
        passwd = self.dir / "passwd"
        passwd.write_text("".join(f"{a}:{hashed}::::::\n" for a in accounts))
        r = subprocess.run([*self.cmd, "--config", str(self.config), "user", "import", str(passwd)],
                           capture_output=True, timeout=300, env=self.env)
        if r.returncode != 0:
            raise RuntimeError(f"pigeon user import: {r.stderr.decode(errors='replace')[-500:]}")

    def start(self) -> None:
        self.logf = open(self.dir / "serve.log", "ab")
        self.proc = subprocess.Popen([*self.cmd, "--config", str(self.config), "serve"], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT)
        wait_port(self.imap_port, self.alive)
        wait_port(self.smtp_port, self.alive)

    def deliver(self, accounts: list[str], n: int) -> float:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.elsewhere.example",
                          timeout=60) as s:
            s.ehlo()
            t0 = time.monotonic()
            refused = s.sendmail(SENDER, accounts, message(f"idle@{DOMAIN}", n))
            self.smtp_done = time.monotonic()
        if refused:
            raise RuntimeError(f"pigeon refused {len(refused)} recipients: {list(refused.items())[:3]}")
        return t0


    def delivered(self) -> dict[str, float]:
        """Each account's local delivery, as wall-clock time: the server's log line
        ``delivered to=<…> relay=local``, written once the message is in the Maildir, fsynced,
        and the change notice sent (ms resolution)."""
        out: dict[str, float] = {}
        for line in (self.dir / "serve.log").read_text(errors="replace").splitlines():
            m = DELIVERED.search(line)
            if m and " relay=local " in line:
                when = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out[m.group(2)] = max(out.get(m.group(2), 0.0), when)
        return out


DELIVERED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .* delivered to=<([^>]+)>")


class Dovecot(Server):
    name = "dovecot"

    def __init__(self, workdir: Path, hibernate: bool) -> None:
        self.hibernate = hibernate
        self.name = "dovecot-hibernate" if hibernate else "dovecot"
        self.dir = workdir / self.name
        self.mail = self.dir / "mail"

    def version(self) -> str:
        v = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
        return f"Dovecot {v}" + (" with imap_hibernate_timeout = 5s" if self.hibernate else
                                 ", one imap process per session (default)")

    def maildir(self, account: str) -> Path:
        local, _, d = account.partition("@")
        return self.mail / d / local

    def setup(self, accounts: list[str], hashed: str, sessions: int) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in ("run", "state", "home"):
            (self.dir / d).mkdir(parents=True)
        self.imap_port = free_port()
        self.uids = {a: VUID_BASE + i for i, a in enumerate(accounts)}
        lines = []
        for a, uid in self.uids.items():
            lines.append(f"{a}:{hashed}:{uid}:{uid}::{self.dir}/home/{a}::\n")
            home = self.dir / "home" / a
            home.mkdir()
            os.chown(home, uid, uid)
            md = self.maildir(a)
            for sub in ("new", "cur", "tmp"):
                (md / sub).mkdir(parents=True, exist_ok=True)
                os.chown(md / sub, uid, uid)
            os.chown(md, uid, uid)
        (self.dir / "passwd").write_text("".join(lines))
        self.settings = f"""\
# Private benchmark instance (bench/idle_bench.py): loopback only, no TLS.
instance_name = pigeon-idle-{self.name}
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {VUID_BASE}
last_valid_uid = {VUID_BASE + len(accounts)}
mail_location = maildir:{self.mail}/%d/%n
passdb {{
  driver = passwd-file
  args = username_format=%u {self.dir}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.dir}/passwd
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
{DOVECOT_LIMITS.format(port=self.imap_port)}{HIBERNATE if self.hibernate else ""}"""
        (self.dir / "dovecot.conf").write_text(self.settings)

    def start(self) -> None:
        self.logf = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.dir / "dovecot.conf")],
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT)
        wait_port(self.imap_port, self.alive)

    def deliver(self, accounts: list[str], n: int) -> float:
        data = message(f"idle@{DOMAIN}", n).replace(b"\r\n", b"\n")
        t0 = time.monotonic()
        for i, a in enumerate(accounts):
            md = self.maildir(a)
            name = f"{int(time.time())}.M{n}P{os.getpid()}Q{i}.bench"
            tmp = md / "tmp" / name
            with open(tmp, "wb") as f:
                f.write(data)
            os.chown(tmp, self.uids[a], self.uids[a])
            os.rename(tmp, md / "new" / name)
        return t0


# --------------------------------------------------------------------------- client processes

class Session:
    __slots__ = ("reader", "writer", "woke", "account")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, account: str) -> None:
        self.reader, self.writer = reader, writer
        self.woke: float | None = None
        self.account = account


async def _command(r: asyncio.StreamReader, w: asyncio.StreamWriter, tag: bytes, line: bytes) -> None:
    w.write(tag + b" " + line + b"\r\n")
    while True:
        got = await r.readline()
        if not got:
            raise ConnectionError(f"closed after {line[:12]!r}")
        if got.startswith(tag + b" "):
            if not got[len(tag) + 1:].startswith(b"OK"):
                raise RuntimeError(f"{line[:12]!r} -> {got[:120]!r}")
            return


async def _open(port: int, account: str) -> Session:
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=16384)
    greeting = await r.readline()
    if not greeting.startswith(b"* OK"):
        raise RuntimeError(f"greeting {greeting[:80]!r}")
    await _command(r, w, b"a", b'LOGIN "%s" "%s"' % (account.encode(), PASSWORD.encode()))
    await _command(r, w, b"b", b"SELECT INBOX")
    w.write(b"c IDLE\r\n")
    got = await r.readline()
    if not got.startswith(b"+"):
        raise RuntimeError(f"IDLE -> {got[:80]!r}")
    return Session(r, w, account)


async def _watch(s: Session) -> None:
    """Record when the first ``* N EXISTS`` (N > 0) arrives."""
    while True:
        line = await s.reader.readline()
        if not line:
            return
        if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS") and line.split()[1] != b"0":
            s.woke = time.monotonic()
            return


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _client(conn: Connection, port: int, accounts: list[str], concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    sessions: list[Session] = []
    errors: list[str] = []

    async def one(a: str) -> None:
        async with sem:
            try:
                sessions.append(await _open(port, a))
            except Exception as e:  # noqa: BLE001 — counted and reported
                errors.append(repr(e)[:200])

    t = time.monotonic()
    await asyncio.gather(*(one(a) for a in accounts))
    watchers = [asyncio.create_task(_watch(s)) for s in sessions]
    conn.send(("ready", len(sessions), len(errors), errors[:3], time.monotonic() - t, _cpu()))
    cmd = await loop.run_in_executor(None, conn.recv)
    assert cmd[0] == "collect", cmd
    _, t0, wait = cmd
    cpu0 = _cpu()
    deadline = t0 + wait
    while time.monotonic() < deadline and not all(s.woke for s in sessions):
        await asyncio.sleep(0.05)
    cpu1 = _cpu()
    conn.send(("result", [None if s.woke is None else s.woke - t0 for s in sessions], cpu1 - cpu0, cpu1,
               [s.account for s in sessions]))
    for task in watchers:
        task.cancel()
    await loop.run_in_executor(None, conn.recv)  # "close"
    for s in sessions:
        s.writer.close()
    await asyncio.gather(*(s.writer.wait_closed() for s in sessions), return_exceptions=True)
    conn.send(("closed",))


async def _warm(port: int, accounts: list[str]) -> None:
    """One LOGIN per account before the sessions: each server's first login of an account
    verifies the hash (Pigeon then rehashes it to its argon2id and caches the success; Dovecot
    fills its auth cache), which is not what this bench measures."""
    sem = asyncio.Semaphore(4)

    async def one(a: str) -> None:
        async with sem:
            s = await _open(port, a)
            s.writer.write(b"DONE\r\nd LOGOUT\r\n")
            await s.writer.drain()
            s.writer.close()

    await asyncio.gather(*(one(a) for a in accounts))


def client_main(conn: Connection, port: int, accounts: list[str], concurrency: int) -> None:
    asyncio.run(_client(conn, port, accounts, concurrency))


# --------------------------------------------------------------------------- one run

def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def one_run(srv: Server, accounts: list[str], hashed: str, a: argparse.Namespace, run: int) -> dict[str, Any]:
    out: dict[str, Any] = {"run": run}
    srv.setup(accounts, hashed, a.sessions)
    srv.start()
    conns: list[Connection] = []
    procs: list[Any] = []
    try:
        t = time.monotonic()
        asyncio.run(_warm(srv.imap_port, accounts))
        out["warm_s"] = time.monotonic() - t
        time.sleep(2)
        out["before"] = srv.memory()
        # Session s goes to account s % users; client k takes every clients-th session.
        plan = [accounts[s % len(accounts)] for s in range(a.sessions)]
        ctx = mp.get_context("fork")
        for k in range(a.clients):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=client_main, args=(child, srv.imap_port, plan[k::a.clients],
                                                      max(1, a.concurrency // a.clients)), daemon=True)
            p.start()
            conns.append(parent)
            procs.append(p)
        t = time.monotonic()
        ready = [c.recv() for c in conns]
        out["open_s"] = time.monotonic() - t
        out["sessions"] = sum(r[1] for r in ready)
        out["open_errors"] = sum(r[2] for r in ready)
        out["open_error_examples"] = [e for r in ready for e in r[3]][:5]
        out["client_cpu_open_s"] = sum(r[5] for r in ready)
        log(f"{srv.name}: {out['sessions']} sessions in IDLE in {out['open_s']:.1f} s "
            f"({out['open_errors']} failed)")
        pids = srv.pids()
        c0 = cpu_seconds(pids)
        time.sleep(a.settle)
        out["idle_cpu_s"] = cpu_seconds(srv.pids()) - c0
        out["with"] = srv.memory()
        log(f"{srv.name}: PSS {out['with']['pss_kib'] / 1024:,.1f} MiB in {out['with']['procs']} processes")
        c0 = cpu_seconds(srv.pids())
        if os.environ.get("WAKE_PROFILE") and srv.proc is not None:  # a sitecustomize's cProfile toggle
            srv.proc.send_signal(signal.SIGUSR2)
        t0 = srv.deliver(accounts, run)
        out["t0_wall"] = time.time() - (time.monotonic() - t0)
        log(f"{srv.name}: delivery started at {dt.datetime.fromtimestamp(out['t0_wall']).strftime('%H:%M:%S.%f')[:-3]}")
        out["deliver_call_s"] = time.monotonic() - t0
        for c in conns:
            c.send(("collect", t0, a.wait))
        results = [c.recv() for c in conns]
        out["wake_cpu_s"] = cpu_seconds(srv.pids()) - c0
        if os.environ.get("WAKE_PROFILE") and srv.proc is not None:
            srv.proc.send_signal(signal.SIGUSR2)
        lat = [x for r in results for x in r[1]]
        if isinstance(srv, Pigeon):
            out["smtp_end_s"] = srv.smtp_done - t0
            # Wake-up measured from the end of the SMTP transaction, and from each account's
            # own delivery into its Maildir (the server's log line; docs/benchmarks.md).
            after_250 = [x - out["smtp_end_s"] for x in lat if x is not None]
            if after_250:
                out["p99_after_250_s"], out["max_after_250_s"] = pct(after_250, 0.99), max(after_250)
            landed = srv.delivered()
            mono = {acct: when - out["t0_wall"] for acct, when in landed.items()}  # seconds after t0
            after_dlv = [x - mono[acct] for r in results for x, acct in zip(r[1], r[4])
                         if x is not None and acct in mono]
            if after_dlv:
                out["p50_after_delivery_s"] = pct(after_dlv, 0.5)
                out["p99_after_delivery_s"], out["max_after_delivery_s"] = pct(after_dlv, 0.99), max(after_dlv)
            if mono:
                out["last_delivery_s"] = max(mono.values())
        got = [x for x in lat if x is not None]
        out["woken"] = len(got)
        out["missed_1s"] = sum(1 for x in lat if x is None or x > 1.0)
        out["missed_wait"] = sum(1 for x in lat if x is None)
        if got:
            out["min_s"], out["p50_s"], out["p99_s"], out["max_s"] = min(got), pct(got, 0.5), pct(got, 0.99), max(got)
        out["client_cpu_wake_s"] = sum(r[2] for r in results)
        out["client_cpu_total_s"] = sum(r[3] for r in results)
        if "last_delivery_s" in out:
            log(f"{srv.name}: 250 after DATA at {out['smtp_end_s']:.3f} s, last local delivery at "
                f"{out['last_delivery_s']:.3f} s; wake-up after the 250 p99 {out.get('p99_after_250_s', 0):.3f} s, "
                f"after the account's delivery p50 {out.get('p50_after_delivery_s', 0):.3f} s "
                f"p99 {out.get('p99_after_delivery_s', 0):.3f} s max {out.get('max_after_delivery_s', 0):.3f} s")
        log(f"{srv.name}: woken {len(got)}/{len(lat)}, min {out.get('min_s', 0):.3f} s, p50 {out.get('p50_s', 0):.3f} s p99 "
            f"{out.get('p99_s', 0):.3f} s max {out.get('max_s', 0):.3f} s, >1 s: {out['missed_1s']}")
        for c in conns:
            c.send(("close",))
        for c in conns:
            c.recv()
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        srv.stop()
    return out


# --------------------------------------------------------------------------- report

ROWS = [("sessions", "sessions in IDLE", "{:,.0f}"), ("open_errors", "sessions that failed to open", "{:,.0f}"),
        ("open_s", "time to open them, s", "{:,.1f}"), ("procs", "server processes with them", "{:,.0f}"),
        ("pss_before_mib", "PSS empty, MiB", "{:,.1f}"), ("pss_mib", "PSS with the sessions, MiB", "{:,.1f}"),
        ("pss_per_session_kib", "PSS per session, KiB", "{:,.1f}"), ("rss_mib", "RSS with the sessions, MiB (shared pages counted per process)", "{:,.0f}"),
        ("idle_cpu_pct", "server CPU while they idle, % of one core", "{:,.1f}"),
        ("min_ms", "wake-up min (the first session), ms", "{:,.0f}"), ("p50_ms", "wake-up p50, ms", "{:,.0f}"), ("p99_ms", "wake-up p99, ms", "{:,.0f}"),
        ("max_ms", "wake-up max, ms", "{:,.0f}"),
        ("smtp_end_ms", "end of the SMTP transaction (250 after DATA), ms after t0", "{:,.0f}"),
        ("last_delivery_ms", "last local delivery into a Maildir (server log), ms after t0", "{:,.0f}"),
        ("p99_after_250_ms", "wake-up p99 from the end of the SMTP transaction, ms", "{:,.0f}"),
        ("max_after_250_ms", "wake-up max from the end of the SMTP transaction, ms", "{:,.0f}"),
        ("p50_after_delivery_ms", "wake-up p50 from its account's delivery into the Maildir, ms", "{:,.0f}"),
        ("p99_after_delivery_ms", "wake-up p99 from its account's delivery into the Maildir, ms", "{:,.0f}"),
        ("max_after_delivery_ms", "wake-up max from its account's delivery into the Maildir, ms", "{:,.0f}"), ("missed_1s", "sessions not woken within 1 s", "{:,.0f}"),
        ("missed_wait", "sessions not woken at all (within --wait)", "{:,.0f}"),
        ("wake_cpu_s", "server CPU for the wake-up, s", "{:,.2f}"),
        ("client_cpu_wake_s", "client CPU during the wake-up window, s", "{:,.2f}"),
        ("client_cpu_total_s", "client CPU in all (4 processes), s", "{:,.1f}")]


def flat(r: dict[str, Any], settle: float) -> dict[str, float]:
    f: dict[str, float] = {k: r[k] for k in ("sessions", "open_errors", "open_s", "missed_1s", "missed_wait",
                                             "wake_cpu_s", "client_cpu_wake_s", "client_cpu_total_s") if k in r}
    if "with" in r:
        f["procs"] = r["with"]["procs"]
        f["pss_before_mib"] = r["before"]["pss_kib"] / 1024
        f["pss_mib"] = r["with"]["pss_kib"] / 1024
        f["rss_mib"] = r["with"]["rss_kib"] / 1024
        if r.get("sessions"):
            f["pss_per_session_kib"] = (r["with"]["pss_kib"] - r["before"]["pss_kib"]) / r["sessions"]
        f["idle_cpu_pct"] = 100 * r["idle_cpu_s"] / settle
    for k in ("min", "p50", "p99", "max", "smtp_end", "last_delivery", "p99_after_250", "max_after_250",
              "p50_after_delivery", "p99_after_delivery", "max_after_delivery"):
        if f"{k}_s" in r:
            f[f"{k}_ms"] = 1000 * r[f"{k}_s"]
    return f


def report(meta: dict[str, Any], res: dict[str, Any]) -> str:
    names = list(res)
    out = [f"## {meta['date']} — {meta['sessions']:,} IDLE sessions, Pigeon against Dovecot", "",
           f"`{meta['command']}` — {meta['sessions']:,} sessions over {meta['users']} accounts, "
           f"password hash {meta['scheme']}, {meta['clients']} client processes, {meta['runs']} run(s) per server alternating; "
           f"median [min–max] of the runs.", "",
           *[f"- {n}: {res[n]['version']}" for n in names], f"- machine: {meta['machine']}", ""]
    out += ["| measure | " + " | ".join(names) + " | pigeon/dovecot |", "|---|" + "---:|" * (len(names) + 1)]
    flats = {n: [flat(r, meta["settle"]) for r in res[n]["runs"]] for n in names}
    for key, label, fmt_ in ROWS:
        cells, meds = [], {}
        for n in names:
            vals = [f[key] for f in flats[n] if key in f]
            if not vals:
                cells.append("–")
                continue
            meds[n] = statistics.median(vals)
            cell = fmt_.format(meds[n])
            if len(vals) > 1:
                cell += f" [{fmt_.format(min(vals))}–{fmt_.format(max(vals))}]"
            cells.append(cell)
        ratio = (f"{meds['pigeon'] / meds['dovecot']:.3f}" if meds.get("pigeon") is not None
                 and meds.get("dovecot") else "–")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    notes = [f"- {n}: {e}" for n in names for e in res[n].get("errors", [])]
    if notes:
        out += ["", "Failures:", *notes]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4, help="client processes")
    ap.add_argument("--concurrency", type=int, default=200, help="sessions being opened at once, in all")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=10.0, help="seconds between the last IDLE and the memory reading")
    ap.add_argument("--wait", type=float, default=35.0, help="seconds to wait for every EXISTS")
    ap.add_argument("--servers", default="pigeon,dovecot", help="pigeon,dovecot,dovecot-hibernate")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs pigeon (PYTHONPATH=src)")
    ap.add_argument("--workdir", default="/tmp/pigeon-bench-idle")
    ap.add_argument("--scheme", default="SSHA512",
                    help="doveadm pw scheme of the accounts' one hash (ARGON2ID: Dovecot verifies it at "
                         "every login, even from its auth cache: ~0.1-0.5 s each here)")
    ap.add_argument("--quick", action="store_true", help="1,000 sessions over 10 accounts")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--pigeon-processes", type=int, default=1,
                    help="Pigeon's [imap] processes: the sessions spread over that many processes")
    a = ap.parse_args()
    if a.quick:
        a.sessions, a.users = 1_000, 10
    raise_nofile(NOFILE)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    accounts = users(a.users)
    # The open-file rule holds per process; with [imap] processes the kernel's accept queue
    # spreads the sessions, so each process is given the room of all of them (up to what fits).
    fits = pigeon_fits(resource.getrlimit(resource.RLIMIT_NOFILE)[0]) * a.pigeon_processes
    if "pigeon" in a.servers.split(",") and a.sessions + 20 > fits:
        # The hard limit cannot be raised without CAP_SYS_RESOURCE: both servers get what fits.
        want = (fits - 20) // a.users * a.users
        log(f"Pigeon's open-file rule allows {fits} connections in this limit: {want} sessions, not {a.sessions}")
        a.sessions = want
    hashed = password_hash(a.scheme)
    make = {"pigeon": lambda: Pigeon(workdir, a.python, a.pigeon_processes), "dovecot": lambda: Dovecot(workdir, False),
            "dovecot-hibernate": lambda: Dovecot(workdir, True)}
    servers: list[Server] = [make[n]() for n in a.servers.split(",")]
    res: dict[str, Any] = {s.name: {"runs": [], "errors": [], "version": s.version()} for s in servers}
    for run in range(a.runs):
        for s in (servers if run % 2 == 0 else servers[::-1]):
            log(f"{s.name}: run {run + 1}")
            try:
                res[s.name]["runs"].append(one_run(s, accounts, hashed, a, run))
                res[s.name]["settings"] = s.settings
            except Exception as e:  # noqa: BLE001 — reported
                log(f"{s.name}: run {run + 1} failed: {e!r}")
                res[s.name]["errors"].append(f"run {run + 1}: {e!r}")
    meta = {"date": dt.date.today().isoformat(), "command": "bench/idle_bench.py " + " ".join(sys.argv[1:]),
            "sessions": a.sessions, "scheme": a.scheme, "users": a.users, "clients": a.clients, "runs": a.runs, "settle": a.settle,
            "machine": ", ".join(f"{k}: {v}" for k, v in machine_info(workdir).items())}
    text = report(meta, res)
    print(text)
    write_results(Path(a.out), f"idle-{meta['date']}", text, {"meta": meta, "results": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
