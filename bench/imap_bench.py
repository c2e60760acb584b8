#!/usr/bin/env python3
"""IMAP and POP3: Pigeon against Dovecot, the same 10,000 messages, the same client, one run.

What it measures (each server, the runs alternating between the servers; median [min–max]):

| measure | how |
|---|---|
| LOGIN + SELECT | connect, greeting, LOGIN, SELECT INBOX (10,000 messages) until the tagged OK (LOGIN verifies an argon2id hash on both servers: most of this time) |
| SELECT | SELECT INBOX alone, on a session already logged in |
| FETCH 1:* FLAGS | on a selected session, the command until its tagged OK, every response read |
| FETCH 1:* ENVELOPE | the same |
| SEARCH TEXT "needle" | the same (1 % of the messages contain the word; no full-text index either side) |
| APPEND | `--append` messages (default 1,000) into a new folder, one after another, each waiting for its OK (LITERAL+ when offered); messages/s |
| POP3 RETR | USER/PASS, then RETR 1 … RETR 10,000 one after another, QUIT without DELE |
| memory, 1,000 IDLE | VmRSS and PSS summed over the server's processes (the process we started and its descendants) before, and with `--idle` sessions (1,000) each logged in, SELECTed the folder "Idle" (`--idle-messages`, 10 messages, APPENDed first) and in IDLE; per session = difference ÷ sessions. Then the same with `--idle-inbox` sessions (100) on the 10,000-message INBOX |

Before the timed runs, the first LOGIN + SELECT of each server is timed alone ("cold": each builds
its index of the Maildir that was dropped in).

The servers:
- **Dovecot** (Debian's dovecot-imapd and dovecot-pop3d; installed with apt-get when missing, with
  a temporary ``/usr/sbin/policy-rc.d`` so that the system's own instance is not started): a
  private instance under WORKDIR/dovecot (its own config, base_dir, state and log), listening
  only on 127.0.0.1 (IMAP and POP3 on free ports, no TLS on either side), a passwd-file with one
  user, mail as Maildir owned by a static uid (2527, no passwd entry needed), run in the
  foreground (``dovecot -F``) as our child and stopped by SIGTERM to that PID.
- **Pigeon**: ``pigeon serve`` with a fresh data_dir, IMAP and POP3 on 127.0.0.1 free ports,
  ``[auth] allow_plaintext_on_loopback = true`` (no TLS either side, like Dovecot here), the
  connection limits lifted for the 1,000 sessions (as bench/run.py does for SMTP).

The messages: ``--messages`` (10,000) generated from a fixed seed (plain text, 0.5–8 KB, LF line
ends as delivered mail is stored), written with identical file names into both INBOX Maildirs'
``new/`` before the servers start, so both index the very same files.

Loopback only; only processes this script started are stopped, by their PID.

Reproduce (as root, from the repository): ``python3 bench/imap_bench.py`` (~13 min; ``--skip idle``: ~4 min);
``python3 bench/imap_bench.py --quick`` (1,000 messages, 1 run, 100 IDLE sessions).
Results: stdout, and bench/results/imap-<date>.md + .json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from run import machine_info, mem_kib, proc_tree  # noqa: E402

DOMAIN = "bench.test"
USER = f"bench@{DOMAIN}"
PASSWORD = "bench-password-not-secret"
VUID = 2527  # the mail owner of the Dovecot instance (no passwd entry needed)
NEEDLE = "needle"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_results(out: Path, name: str, text: str, data: dict[str, Any]) -> None:
    """The report as ``out/name.md`` and the data as ``.json``; ``name-2``, ``-3``… when taken."""
    out.mkdir(parents=True, exist_ok=True)
    stem, k = out / name, 2
    while stem.with_suffix(".md").exists():
        stem, k = out / f"{name}-{k}", k + 1
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    log(f"wrote {stem}.md and .json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, alive: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"server exited before 127.0.0.1:{port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"127.0.0.1:{port} did not open in {timeout} s")


# --------------------------------------------------------------------------- messages

WORDS = ("mail server queue delivery message header body folder client session index "
         "flag search fetch envelope append select idle maildir sqlite python dovecot "
         "pigeon lorem ipsum dolor sit amet consectetur adipiscing elit").split()


def make_messages(n: int, seed: int = 42) -> list[tuple[str, bytes]]:
    """(file name, LF bytes) for n messages; 1 % contain NEEDLE in the body."""
    rnd = random.Random(seed)
    out = []
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(n):
        when = base + dt.timedelta(minutes=7 * i)
        subject = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 8)))
        lines: list[str] = []
        size = rnd.randint(500, 8000)
        while sum(len(x) + 1 for x in lines) < size:
            lines.append(" ".join(rnd.choice(WORDS) for _ in range(10)))
        if i % 100 == 37:
            lines.insert(rnd.randrange(len(lines)), f"here is the {NEEDLE} we look for")
        sender = f"user{rnd.randint(1, 500)}@sender{rnd.randint(1, 40)}.example"
        head = (f"Return-Path: <{sender}>\n"
                f"Received: from mx.sender.example by pigeon.{DOMAIN}; {when:%a, %d %b %Y %H:%M:%S +0000}\n"
                f"From: User {i} <{sender}>\nTo: Bench <{USER}>\n"
                f"Cc: other{i % 7}@{DOMAIN}\nSubject: {subject} #{i}\n"
                f"Date: {when:%a, %d %b %Y %H:%M:%S +0000}\n"
                f"Message-ID: <{i}.{seed}@sender.example>\nMIME-Version: 1.0\n"
                "Content-Type: text/plain; charset=us-ascii\n\n")
        data = (head + "\n".join(lines) + "\n").encode()
        crlf = len(data) + data.count(b"\n")
        t = int(when.timestamp())
        out.append((f"{t}.M{i}P1Q{i}.bench,S={len(data)},W={crlf}", data))
    return out


def drop_into(maildir: Path, messages: list[tuple[str, bytes]], uid: int | None = None) -> None:
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for name, data in messages:
        p = maildir / "new" / name
        p.write_bytes(data)
        t = int(name.split(".", 1)[0])
        os.utime(p, (t, t))
    if uid is not None:
        for root, dirs, files in os.walk(maildir.parents[1]):
            for x in dirs + files:
                os.chown(os.path.join(root, x), uid, uid)
        os.chown(maildir.parents[1], uid, uid)


# --------------------------------------------------------------------------- servers

class BenchServer:
    name = "?"
    proc: subprocess.Popen[bytes] | None = None
    logf: Any = None
    imap_port = 0
    pop3_port = 0

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def memory(self) -> tuple[int, int, int]:
        """(RSS KiB, PSS KiB, process count) over our process and its descendants."""
        pids = self.pids()
        rss = pss = 0
        for p in pids:
            r, s = mem_kib(p)
            rss += r
            pss += s
        return rss, pss, len(pids)

    def wait_ports(self, services: set[str]) -> None:
        """Wait for the ports of the services measured ("imap" also serves the IDLE test)."""
        alive = lambda: self.proc is not None and self.proc.poll() is None  # noqa: E731
        if services & {"imap", "idle"}:
            wait_port(self.imap_port, alive)
        if "pop3" in services:
            wait_port(self.pop3_port, alive)

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

    def version(self) -> str:
        raise NotImplementedError

    def setup(self, messages: list[tuple[str, bytes]]) -> None:
        raise NotImplementedError

    def start(self, services: set[str]) -> None:
        raise NotImplementedError


class Dovecot(BenchServer):
    name = "dovecot"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "dovecot"
        self.mail = self.dir / "mail"

    @staticmethod
    def ensure_installed() -> None:
        if shutil.which("dovecot") and Path("/usr/lib/dovecot/pop3").exists():
            return
        log("installing dovecot-imapd dovecot-pop3d with apt-get")
        policy = Path("/usr/sbin/policy-rc.d")
        ours = not policy.exists()
        if ours:  # Debian's way to keep maintainer scripts from starting the system instance
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "dovecot-imapd",
                            "dovecot-pop3d"], check=True, env=env, timeout=900)
        finally:
            if ours:
                policy.unlink()

    password_scheme = "?"

    def version(self) -> str:
        v = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
        return f"Dovecot {v}, password hash {self.password_scheme}"

    def setup(self, messages: list[tuple[str, bytes]]) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in ("run", "state", "home"):
            (self.dir / d).mkdir(parents=True)
        os.chown(self.dir / "home", VUID, VUID)
        self.imap_port, self.pop3_port = free_port(), free_port()
        # The password as an argon2id hash, as Pigeon stores it (Pigeon: argon2-cffi, m=64 MiB t=3
        # p=4; doveadm: libsodium, m=64 MiB t=3 p=1), so that both pay for a slow hash at LOGIN.
        hashed = subprocess.run(["doveadm", "pw", "-s", "ARGON2ID", "-p", PASSWORD], capture_output=True,
                                text=True, timeout=60).stdout.strip()
        if not hashed.startswith("{ARGON2ID}"):
            log("doveadm pw -s ARGON2ID failed; the Dovecot password is stored in the clear")
            hashed = "{PLAIN}" + PASSWORD
        self.password_scheme = ("ARGON2ID " + hashed.split("$")[3]) if hashed.startswith("{ARGON2ID}") else "PLAIN"
        (self.dir / "passwd").write_text(f"{USER}:{hashed}::::::\n")
        (self.dir / "dovecot.conf").write_text(f"""\
# Private benchmark instance (bench/imap_bench.py): loopback only, no TLS, one virtual user.
instance_name = pigeon-bench-dovecot
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {VUID}
last_valid_uid = {VUID}
mail_location = maildir:{self.mail}/%d/%n
mail_max_userip_connections = 5000
default_process_limit = 2000
default_client_limit = 7000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={VUID} gid={VUID} home={self.dir}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap {{
  process_limit = 2000
}}
""")
        drop_into(self.mail / DOMAIN / "bench", messages, uid=VUID)
        os.chown(self.mail, VUID, VUID)

    def start(self, services: set[str]) -> None:
        self.logf = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.dir / "dovecot.conf")],
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT)
        self.wait_ports(services)



class Pigeon(BenchServer):
    name = "pigeon"

    def __init__(self, workdir: Path, cmd: list[str]) -> None:
        self.dir = workdir / "pigeon"
        self.data = self.dir / "data"
        self.cmd = cmd

    def version(self) -> str:
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        return f"Pigeon {rev or '?'}"

    def setup(self, messages: list[tuple[str, bytes]]) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.data.mkdir(parents=True)
        self.imap_port, self.pop3_port, smtp = free_port(), free_port(), free_port()
        self.config = self.dir / "pigeon.toml"
        self.config.write_text(
            f'hostname = "pigeon.{DOMAIN}"\ndata_dir = "{self.data}"\ndomains = ["{DOMAIN}"]\n'
            "[auth]\nallow_plaintext_on_loopback = true\nfailure_delay = 0\n"
            f'[listen]\nsmtp = ["127.0.0.1:{smtp}"]\nimap = ["127.0.0.1:{self.imap_port}"]\n'
            f'pop3 = ["127.0.0.1:{self.pop3_port}"]\n'
            # Lifted for the 1,000 IDLE sessions from one address (defaults: 50 per IP, 1,000 in all).
            "[limits]\nmax_connections = 5000\nmax_connections_per_ip = 5000\n")
        r = subprocess.run([*self.cmd, "--config", str(self.config), "user", "add", USER,
                            "--password-stdin"], input=(PASSWORD + "\n").encode(), capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"pigeon user add failed: {r.stderr.decode(errors='replace')[-500:]}")
        sys.path.insert(0, str(REPO / "src"))
        from pigeon.core.address import parse_address
        from pigeon.store.names import mailbox_components

        d, local = mailbox_components(parse_address(USER))
        drop_into(self.data / "mail" / d / local, messages)

    def start(self, services: set[str]) -> None:
        self.logf = open(self.dir / "serve.log", "ab")
        self.proc = subprocess.Popen([*self.cmd, "--config", str(self.config), "serve"],
                                     stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT)
        self.wait_ports(services)



# --------------------------------------------------------------------------- clients

class Imap:
    """A minimal synchronous IMAP client: commands, all responses read (literals included)."""

    def __init__(self, port: int, timeout: float = 600.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb", buffering=1 << 16)
        self.n = 0
        greeting = self.f.readline()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"IMAP greeting {greeting!r}")
        self.caps = greeting.upper()

    def close(self) -> None:
        self.f.close()
        self.sock.close()

    def response(self) -> bytes:
        out = self.f.readline()
        if not out:
            raise ConnectionError("IMAP connection closed")
        while out.endswith(b"}\r\n"):
            m = re.search(rb"\{(\d+)\}\r\n$", out)
            if m is None:
                break
            out += self.f.read(int(m.group(1)))
            out += self.f.readline()
        return out

    def cmd(self, line: bytes, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = b"b%d " % self.n
        self.sock.sendall(tag + line + b"\r\n" + (literal + b"\r\n" if literal is not None else b""))
        lines: list[bytes] = []
        while True:
            r = self.response()
            if r.startswith(tag):
                if not r[len(tag):].startswith(b"OK"):
                    raise RuntimeError(f"{line[:60]!r} → {r!r}")
                return lines
            lines.append(r)

    def append(self, mailbox: str, data: bytes, literal_plus: bool) -> None:
        if literal_plus:
            self.cmd(b"APPEND %s (\\Seen) {%d+}" % (mailbox.encode(), len(data)), data)
            return
        self.n += 1
        tag = b"b%d " % self.n
        self.sock.sendall(tag + b"APPEND %s (\\Seen) {%d}\r\n" % (mailbox.encode(), len(data)))
        r = self.response()
        if not r.startswith(b"+"):
            raise RuntimeError(f"APPEND → {r!r}")
        self.sock.sendall(data + b"\r\n")
        while True:
            r = self.response()
            if r.startswith(tag):
                if not r[len(tag):].startswith(b"OK"):
                    raise RuntimeError(f"APPEND → {r!r}")
                return


def login(port: int) -> Imap:
    c = Imap(port)
    c.cmd(b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))
    return c


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def login_select(port: int) -> tuple[float, int]:
    t = time.perf_counter()
    c = login(port)
    lines = c.cmd(b"SELECT INBOX")
    elapsed = time.perf_counter() - t
    c.cmd(b"LOGOUT")
    c.close()
    exists = next(int(x.split()[1]) for x in lines if x.endswith(b" EXISTS\r\n"))
    return elapsed, exists


def imap_runs(srv: BenchServer, n: int, append_n: int, messages: list[tuple[str, bytes]],
              run_no: int) -> dict[str, float]:
    out: dict[str, float] = {}
    out["login_select"], exists = login_select(srv.imap_port)
    if exists != n:
        raise RuntimeError(f"{srv.name}: SELECT INBOX shows {exists} messages, expected {n}")
    c = login(srv.imap_port)
    try:
        out["select"], _ = timed(lambda: c.cmd(b"SELECT INBOX"))
        out["fetch_flags"], lines = timed(lambda: c.cmd(b"FETCH 1:* (FLAGS)"))
        if len(lines) != n:
            raise RuntimeError(f"{srv.name}: FETCH FLAGS gave {len(lines)} responses")
        out["fetch_envelope"], lines = timed(lambda: c.cmd(b"FETCH 1:* (ENVELOPE)"))
        if len(lines) != n:
            raise RuntimeError(f"{srv.name}: FETCH ENVELOPE gave {len(lines)} responses")
        out["search_text"], lines = timed(lambda: c.cmd(b'SEARCH TEXT "%s"' % NEEDLE.encode()))
        found = len(lines[0].split()) - 2 if lines else 0
        if found != len([1 for _, d in messages if NEEDLE.encode() in d]):
            raise RuntimeError(f"{srv.name}: SEARCH TEXT found {found}")
        folder = f"Append{run_no}"
        c.cmd(b"CREATE %s" % folder.encode())
        plus = b"LITERAL+" in c.caps or b"LITERAL+" in b"".join(c.cmd(b"CAPABILITY"))
        payloads = [d.replace(b"\n", b"\r\n") for _, d in messages[:append_n]]

        def appends() -> None:
            for d in payloads:
                c.append(folder, d, plus)

        secs, _ = timed(appends)
        out["append_per_s"] = append_n / secs
        c.cmd(b"DELETE %s" % folder.encode())
        c.cmd(b"LOGOUT")
    finally:
        c.close()
    return out


def pop3_retr_all(port: int, n: int) -> float:
    t = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=600)
    f = sock.makefile("rb", buffering=1 << 16)
    try:
        def ok(line: bytes) -> bytes:
            if line:
                sock.sendall(line + b"\r\n")
            r = f.readline()
            if not r.startswith(b"+OK"):
                raise RuntimeError(f"POP3 {line!r} → {r!r}")
            return r

        ok(b"")
        ok(b"USER " + USER.encode())
        ok(b"PASS " + PASSWORD.encode())
        count = int(ok(b"STAT").split()[1])
        if count != n:
            raise RuntimeError(f"POP3 STAT {count}, expected {n}")
        for i in range(1, n + 1):
            ok(b"RETR %d" % i)
            while True:
                ln = f.readline()
                if ln == b".\r\n":
                    break
                if not ln:
                    raise ConnectionError("POP3 connection closed during RETR")
        ok(b"QUIT")
        return time.perf_counter() - t
    finally:
        f.close()
        sock.close()


async def _idle_one(port: int, mailbox: str, ready: list[asyncio.StreamWriter], sem: asyncio.Semaphore) -> None:
    async with sem:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await r.readline()
        w.write(b'a LOGIN "%s" "%s"\r\nb SELECT "%s"\r\nc IDLE\r\n' % (
            USER.encode(), PASSWORD.encode(), mailbox.encode()))
        await w.drain()
        while True:
            line = await asyncio.wait_for(r.readline(), 120)
            if not line:
                raise ConnectionError("closed before IDLE")
            if line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD", b"c NO", b"c BAD")):
                raise RuntimeError(f"IDLE session: {line!r}")
            if line.startswith(b"+"):
                break
        ready.append(w)


def make_idle_folder(port: int, mailbox: str, messages: list[tuple[str, bytes]]) -> None:
    """Create ``mailbox`` with these messages (same for both servers), unless it is INBOX."""
    if mailbox.upper() == "INBOX":
        return
    c = login(port)
    try:
        c.cmd(b"CREATE %s" % mailbox.encode())
        for _, d in messages:
            c.append(mailbox, d.replace(b"\n", b"\r\n"), False)
        c.cmd(b"LOGOUT")
    finally:
        c.close()


async def idle_memory(srv: BenchServer, sessions: int, mailbox: str) -> dict[str, Any]:
    await asyncio.sleep(2)
    rss0, pss0, procs0 = srv.memory()
    ready: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(50)
    t = time.perf_counter()
    results = await asyncio.gather(*(_idle_one(srv.imap_port, mailbox, ready, sem) for _ in range(sessions)),
                                   return_exceptions=True)
    setup_s = time.perf_counter() - t
    errors = [repr(x) for x in results if isinstance(x, BaseException)]
    await asyncio.sleep(3)
    rss1, pss1, procs1 = srv.memory()
    for w in ready:
        w.write(b"DONE\r\nd LOGOUT\r\n")
    for w in ready:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in ready), return_exceptions=True)
    n = len(ready)
    return {"sessions": n, "errors": errors[:5], "error_count": len(errors), "setup_s": setup_s,
            "rss_before_kib": rss0, "pss_before_kib": pss0, "procs_before": procs0,
            "rss_after_kib": rss1, "pss_after_kib": pss1, "procs_after": procs1,
            "rss_per_session_kib": (rss1 - rss0) / n if n else None,
            "pss_per_session_kib": (pss1 - pss0) / n if n else None}


# --------------------------------------------------------------------------- report

TIMINGS = [("login_select", "LOGIN + SELECT INBOX", "ms"), ("select", "SELECT INBOX (logged in)", "ms"),
           ("fetch_flags", "FETCH 1:* (FLAGS)", "ms"),
           ("fetch_envelope", "FETCH 1:* (ENVELOPE)", "ms"), ("search_text", 'SEARCH TEXT "needle"', "ms"),
           ("append_per_s", "APPEND, messages/s", "rate"), ("pop3_retr", "POP3 RETR of all", "ms")]


def fmt(values: list[float], unit: str) -> str:
    if not values:
        return "failed or skipped"
    k = 1000.0 if unit == "ms" else 1.0
    med = statistics.median(values) * k
    return f"{med:,.0f} [{min(values) * k:,.0f}–{max(values) * k:,.0f}]" if len(values) > 1 else f"{med:,.0f}"


def report(meta: dict[str, Any], res: dict[str, Any]) -> str:
    names = list(res)
    out = [f"## {meta['date']} — IMAP/POP3, Pigeon against Dovecot", "",
           f"`{meta['command']}` — {meta['messages']:,} messages "
           f"({meta['mbytes']:.1f} MB), {meta['runs']} runs alternating, "
           f"APPEND of {meta['append']:,}; IDLE: {meta['idle']:,} sessions on a {meta['idle_messages']}-message "
           f"folder, {meta['idle_inbox']:,} on INBOX.", "",
           *[f"- {n}: {res[n]['version']}" for n in names],
           f"- machine: {meta['machine']}", ""]
    out += ["| measure | " + " | ".join(names) + " | pigeon/dovecot |", "|---|" + "---:|" * (len(names) + 1)]
    cold: dict[str, float | None] = {n: res[n].get("cold_login_select") for n in names}
    out.append("| first LOGIN + SELECT (cold index), ms | " + " | ".join(
        f"{(cold[n] or 0) * 1000:,.0f}" if cold[n] else "failed or skipped" for n in names) + " | " + ratio(
        [v for v in [cold.get("pigeon")] if v], [v for v in [cold.get("dovecot")] if v], "ms") + " |")
    for key, label, unit in TIMINGS:
        vals = {n: [r[key] for r in res[n]["runs"] if key in r] for n in names}
        out.append(f"| {label}{', ms' if unit == 'ms' else ''} | " + " | ".join(fmt(vals[n], unit) for n in names)
                   + " | " + ratio(vals.get("pigeon", []), vals.get("dovecot", []), unit) + " |")
    out += ["", "Ratios of medians; for times above 1 means Pigeon is slower, for APPEND/s below 1 means "
            "Pigeon is slower.", ""]
    for label, title in (("idle", f"{meta['idle']:,} IDLE sessions on a {meta['idle_messages']}-message folder"),
                         ("idle_inbox", f"{meta['idle_inbox']:,} IDLE sessions on the {meta['messages']:,}-message INBOX")):
        out += [f"Memory, {title}:", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for key, row in [("procs_before", "processes before"), ("rss_before_kib", "RSS before, KiB"),
                         ("pss_before_kib", "PSS before, KiB"), ("sessions", "IDLE sessions held"),
                         ("procs_after", "processes with the sessions"), ("rss_after_kib", "RSS with, KiB"),
                         ("pss_after_kib", "PSS with, KiB"), ("rss_per_session_kib", "RSS per session, KiB"),
                         ("pss_per_session_kib", "PSS per session, KiB"), ("setup_s", "time to open them, s")]:
            cells = []
            for n in names:
                v = res[n].get("idle", {}).get(label, {}).get(key)
                cells.append("failed or skipped" if v is None else (f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"))
            out.append(f"| {row} | " + " | ".join(cells) + " |")
        out.append("")
    notes = [f"- {n}: {e}" for n in names for e in res[n].get("errors", [])]
    if notes:
        out += ["", "Notes (failures):", *notes]
    return "\n".join(out) + "\n"


def ratio(p: list[float], d: list[float], unit: str) -> str:
    if not p or not d:
        return "–"
    return f"{statistics.median(p) / statistics.median(d):.2f}"


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--append", type=int, default=1_000)
    ap.add_argument("--idle", type=int, default=1_000)
    ap.add_argument("--idle-messages", type=int, default=10, help="messages in the folder Idle")
    ap.add_argument("--idle-inbox", type=int, default=100, help="IDLE sessions on INBOX (0: none)")
    ap.add_argument("--servers", default="pigeon,dovecot")
    ap.add_argument("--skip", default="", help="comma list of: imap,pop3,idle")
    ap.add_argument("--workdir", default="/tmp/pigeon-bench-imap")
    ap.add_argument("--pigeon-cmd", default=None, help="default: .venv/bin/pigeon, else python -m pigeon.admin.cli")
    ap.add_argument("--quick", action="store_true", help="1,000 messages, 1 run, 100 APPENDs, 100 IDLE")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    if a.quick:
        a.messages, a.runs, a.append, a.idle, a.idle_inbox = 1_000, 1, 100, 100, 20
    skip = set(filter(None, a.skip.split(",")))
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    venv = REPO / ".venv" / "bin" / "pigeon"
    cmd = a.pigeon_cmd.split() if a.pigeon_cmd else ([str(venv)] if venv.exists() else
                                                     [sys.executable, "-m", "pigeon.admin.cli"])
    wanted = a.servers.split(",")
    if "dovecot" in wanted:
        Dovecot.ensure_installed()
    servers: list[BenchServer] = [s for s in (Pigeon(workdir, cmd), Dovecot(workdir)) if s.name in wanted]
    log(f"generating {a.messages:,} messages")
    messages = make_messages(a.messages)
    res: dict[str, Any] = {s.name: {"runs": [], "errors": []} for s in servers}
    try:
        for s in servers:
            log(f"{s.name}: setup and start")
            s.setup(messages)
            res[s.name]["version"] = s.version()
            s.start({"imap", "pop3", "idle"} - skip)
            if "imap" not in skip:
                try:
                    res[s.name]["cold_login_select"], _ = login_select(s.imap_port)
                except Exception as e:  # noqa: BLE001 — reported in the results
                    res[s.name]["errors"].append(f"cold LOGIN+SELECT: {e!r}")
        for run in range(a.runs):
            order = servers if run % 2 == 0 else servers[::-1]
            for s in order:
                r: dict[str, float] = {}
                if "imap" not in skip:
                    log(f"{s.name}: IMAP run {run + 1}")
                    try:
                        r.update(imap_runs(s, a.messages, a.append, messages, run))
                    except Exception as e:  # noqa: BLE001
                        res[s.name]["errors"].append(f"IMAP run {run + 1}: {e!r}")
                if "pop3" not in skip:
                    log(f"{s.name}: POP3 run {run + 1}")
                    try:
                        r["pop3_retr"] = pop3_retr_all(s.pop3_port, a.messages)
                    except Exception as e:  # noqa: BLE001
                        res[s.name]["errors"].append(f"POP3 run {run + 1}: {e!r}")
                res[s.name]["runs"].append(r)
        if "idle" not in skip:
            for s in servers:
                res[s.name]["idle"] = {}
                for label, box, count in (("idle", "Idle", a.idle), ("idle_inbox", "INBOX", a.idle_inbox)):
                    if not count:
                        continue
                    log(f"{s.name}: {count} IDLE sessions on {box}")
                    try:
                        make_idle_folder(s.imap_port, box, messages[:a.idle_messages])
                        got = asyncio.run(idle_memory(s, count, box))
                        res[s.name]["idle"][label] = got
                        if got["error_count"]:
                            res[s.name]["errors"].append(f"IDLE on {box}: {got['error_count']} sessions "
                                                         f"failed, e.g. {got['errors'][:2]}")
                    except Exception as e:  # noqa: BLE001
                        res[s.name]["errors"].append(f"IDLE on {box}: {e!r}")
    finally:
        for s in servers:
            s.stop()
    meta = {"date": dt.date.today().isoformat(), "command": "python3 bench/imap_bench.py " + " ".join(sys.argv[1:]),
            "messages": a.messages, "runs": a.runs, "append": a.append, "idle": a.idle,
            "idle_messages": a.idle_messages, "idle_inbox": a.idle_inbox, "mbytes": sum(len(d) for _, d in messages) / 1e6,
            "machine": ", ".join(f"{k}: {v}" for k, v in machine_info(workdir).items())}
    text = report(meta, res)
    print(text)
    write_results(Path(a.out), f"imap-{meta['date']}", text, {"meta": meta, "results": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
