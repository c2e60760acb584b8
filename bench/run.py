#!/usr/bin/env python3
"""Pigeon vs Postfix: durable acceptance, end-to-end delivery, the fsync ceiling, idle memory.

For each server (pigeon, postfix) × sessions (1, 10, 50) × message size (1 KB, 10 KB, 100 KB):

(a) durable acceptance: N messages / the generator's wall time (every message got its 250),
(b) end-to-end: N messages / the time from the generator's start until N new files are in the
    Maildir ``new/`` directories (polled every 10 ms once the generator has finished),

each run 5 times, medians reported, with the ratio pigeon/postfix (> 1: Pigeon is faster).
Also (c) this machine's rate of durable file creations (bench/fsyncrate.py) and (d) the memory
of each idle server, and with 1,000 idle SMTP sessions open.

Rules:
  1. Loopback only: both servers listen on 127.0.0.1, the generators refuse anything else.
  2. Only processes this script started are stopped, by their PIDs (Pigeon: the Popen PID;
     Postfix: via bench/setup-postfix.sh, which uses its instance's own master.pid).
  3. Each configuration starts from a fresh server: Pigeon gets a new data_dir, Postfix an
     emptied queue and Maildir; both are restarted. One untimed warm-up batch precedes the runs.
  4. Both servers get byte-identical messages (the same files, the same generator, same order);
     configurations alternate between the servers so drift on the machine hits both alike.
  5. Every run is bounded in time (--max-run-seconds); a configuration that times out or fails
     is reported as such, never as a number.
  6. Before each configuration both servers' previous files are deleted, then the harness waits
     --settle seconds (default 60) before starting them: ext4 without a journal (this VM's /)
     makes every file creation skip the inodes deleted in the last 30–55 s (recently_deleted()),
     so without the pause both servers would pay, in the next configuration, for the thousands
     of files the previous one left; with it, each pays only for what it deletes itself while
     it runs (Postfix: a queue file per message).

Usage:
  python3 bench/run.py                 # the default run (~15 min with both servers)
  python3 bench/run.py --quick         # smoke run (~1-2 min)
  python3 bench/run.py --servers postfix
  python3 bench/run.py --pigeon-cmd "python3 bench/standin_pigeon.py"   # test the harness
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
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

import fsyncrate  # noqa: E402
import smtpload  # noqa: E402

DOMAIN = "bench.test"
BENCH_INBOUND = '[inbound]\ntrusted_networks = ["127.0.0.1/32"]\n'
SENDER = f"from@{DOMAIN}"
RCPT = f"bench@{DOMAIN}"
USERS = [RCPT]
PASSWORD = "bench-password-not-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Pigeon's defaults allow 50 connections per IP and 1,000 in all: the load comes from one address,
# and the memory test holds 1,000 sessions, so lift both — as the Postfix instance lifts its own
# limits (smtpd maxproc 1100, no connection count limit).
PIGEON_TOML_TAIL = """[limits]
max_connections = 1100
max_connections_per_ip = 1100
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc helpers

def proc_children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for e in os.scandir("/proc"):
        if not e.name.isdigit():
            continue
        try:
            with open(f"/proc/{e.name}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        kids.setdefault(ppid, []).append(int(e.name))
    return kids


def proc_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    kids = proc_children()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def mem_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) in KiB; (0, 0) if the process is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime+cutime+cstime summed over ``pids`` (exited children count via cutime)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rpartition(")")[2].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


# --------------------------------------------------------------------------- servers

def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_greeting(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def count_maildir(mail_root: Path) -> int:
    """Files in every ``<mail_root>/<local>/new/``."""
    n = 0
    try:
        users = list(os.scandir(mail_root))
    except FileNotFoundError:
        return 0
    for u in users:
        try:
            n += len(os.listdir(os.path.join(u.path, "new")))
        except (FileNotFoundError, NotADirectoryError):
            pass
    return n


class Server:
    name = "?"
    port = 0
    unavailable: str | None = None

    def setup(self) -> None:
        """Check/prepare once; set ``unavailable`` to a reason if this server can't be run."""

    def fresh_start(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Delete the previous configuration's files (the server is stopped)."""

    def stop(self) -> None:
        raise NotImplementedError

    def mail_root(self) -> Path:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def session_pids(self) -> list[int] | None:
        """The per-session processes, for a server that has them (None: one process does all)."""
        return None

    def describe(self) -> str:
        return self.name


class Postfix(Server):
    name = "postfix"

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.dir = workdir / "postfix"
        self.script = HERE / "setup-postfix.sh"
        self.env = dict(os.environ, PFX_DIR=str(self.dir), PFX_PORT=str(port),
                        PFX_DOMAIN=DOMAIN, PFX_USERS=" ".join(USERS))
        self.version = "?"

    def sh(self, *args: str) -> str:
        r = subprocess.run([str(self.script), *args], env=self.env, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"setup-postfix.sh {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def setup(self) -> None:
        if os.geteuid() != 0:
            self.unavailable = "needs root (postfix -c)"
            return
        try:
            if self.dir.exists():
                self.sh("stop")
            if port_answers(self.port):
                self.unavailable = f"port {self.port} is already in use"
                return
            self.sh("setup")
            self.version = subprocess.run(["postconf", "-h", "-d", "mail_version"],
                                          capture_output=True, text=True).stdout.strip()
        except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError) as e:
            self.unavailable = str(e)

    def master_pid(self) -> int | None:
        out = self.sh("status").split()
        return int(out[1]) if out and out[0] == "running" else None

    def fresh_start(self) -> None:
        self.sh("stop")
        self.sh("reset")
        self.sh("start")

    def reset(self) -> None:
        self.sh("reset")

    def stop(self) -> None:
        self.sh("stop")

    def mail_root(self) -> Path:
        return self.dir / "mail" / DOMAIN

    def pids(self) -> list[int]:
        m = self.master_pid()
        return proc_tree(m) if m else []

    def session_pids(self) -> list[int] | None:
        return [p for p in self.pids() if comm(p) == "smtpd"]

    def describe(self) -> str:
        return f"Postfix {self.version} (separate instance in {self.dir}, 127.0.0.1:{self.port})"


class Pigeon(Server):
    name = "pigeon"

    def __init__(self, workdir: Path, port: int, cmd: list[str], extra_toml: str,
                 tail_toml: str) -> None:
        self.port = port
        self.cmd = cmd
        self.dir = workdir / "pigeon"
        self.config = self.dir / "pigeon.toml"
        self.data = self.dir / "data"
        self.extra = extra_toml
        self.tail = tail_toml
        self.proc: subprocess.Popen[bytes] | None = None
        self.logf: Any = None

    def setup(self) -> None:
        exe = shutil.which(self.cmd[0]) or (self.cmd[0] if os.path.exists(self.cmd[0]) else None)
        if exe is None:
            self.unavailable = f"{self.cmd[0]} not found (make install?)"
        elif port_answers(self.port):
            self.unavailable = f"port {self.port} is already in use"

    def write_config(self) -> None:
        self.config.write_text(
            f'hostname = "pigeon.{DOMAIN}"\n'
            f'data_dir = "{self.data}"\n'
            f'domains = ["{DOMAIN}"]\n'
            f"{self.extra}\n"
            # The load comes from 127.0.0.1 with From: in our own domain, which the port-25
            # checks (on by default) would refuse; Postfix runs none, so for a like-for-like
            # run the client is trusted. bench/mailauth_cpu.py measures the checks' cost.
            f"{'' if '[inbound]' in self.extra else BENCH_INBOUND}"
            "[listen]\n"
            f'smtp = ["127.0.0.1:{self.port}"]\n'
            f"{self.tail}\n")

    def reset(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)

    def fresh_start(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data.mkdir()
        self.write_config()
        base = [*self.cmd, "--config", str(self.config)]
        for u in USERS:
            r = subprocess.run([*base, "user", "add", u, "--password-stdin"],
                               input=(PASSWORD + "\n").encode(), capture_output=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"pigeon user add {u} failed ({r.returncode}): "
                                   f"{r.stderr.decode(errors='replace').strip()[-500:]}")
        if port_answers(self.port):
            raise RuntimeError(f"port {self.port} is in use before pigeon started")
        self.logf = open(self.dir / "serve.log", "ab")
        self.proc = subprocess.Popen([*base, "serve"], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        if not wait_greeting(self.port, 30, lambda: self.proc is not None and self.proc.poll() is None):
            rc = self.proc.poll()
            self.stop()
            tail = (self.dir / "serve.log").read_bytes()[-800:].decode(errors="replace")
            raise RuntimeError(f"pigeon serve did not answer on 127.0.0.1:{self.port} "
                               f"(exit {rc}); log tail:\n{tail}")
        # With [smtp] processes > 1 the server logs "pigeon started" once its workers listen too.
        deadline = time.monotonic() + 30
        while b"pigeon started" not in (self.dir / "serve.log").read_bytes():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("pigeon serve did not finish starting within 30 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    log(f"pigeon pid {self.proc.pid} ignored SIGTERM for 15 s; SIGKILL")
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        if self.logf is not None:
            self.logf.close()
            self.logf = None

    def mail_root(self) -> Path:
        return self.data / "mail" / DOMAIN

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def describe(self) -> str:
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip() or "?"
        return f"Pigeon {rev} (`{shlex.join(self.cmd)}`, 127.0.0.1:{self.port})"


# --------------------------------------------------------------------------- one run

def run_generator(gen: str, port: int, msgfile: Path, sessions: int, messages: int,
                  reuse: bool, timeout: float) -> dict[str, Any]:
    """Run one generator to completion; returns start/end (monotonic), ok, detail."""
    if gen == "smtp-source":
        argv = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-F", str(msgfile),
                "-f", SENDER, "-t", RCPT, "-M", "smtp-source.bench.test"]
        if reuse:
            argv.append("-d")
        argv.append(f"127.0.0.1:{port}")
        t0 = time.monotonic()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "start": t0, "end": time.monotonic(),
                    "detail": f"timed out after {timeout:.0f} s"}
        t1 = time.monotonic()
        ok = r.returncode == 0
        return {"ok": ok, "start": t0, "end": t1,
                "detail": "" if ok else (r.stderr.strip() or f"exit {r.returncode}")[-300:]}
    argv = [sys.executable, str(HERE / "smtpload.py"), "send", "--port", str(port),
            "-s", str(sessions), "-m", str(messages), "--file", str(msgfile),
            "-f", SENDER, "-t", RCPT, "--timeout", str(timeout), "--json"]
    if reuse:
        argv.append("--reuse")
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return {"ok": False, "start": t0, "end": time.monotonic(), "detail": "timed out"}
    try:
        res = json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"ok": False, "start": t0, "end": time.monotonic(),
                "detail": (r.stderr.strip() or r.stdout.strip())[-300:]}
    ok = res["sent"] == messages and not res["timed_out"]
    return {"ok": ok, "start": res["t_start"], "end": res["t_end"],
            "latency_ms": res["latency_ms"],
            "detail": "" if ok else f"sent {res['sent']}/{messages}, errors {res['errors']}"}


def one_run(server: Server, gen: str, msgfile: Path, sessions: int, messages: int,
            reuse: bool, max_seconds: float) -> dict[str, Any]:
    root = server.mail_root()
    base = count_maildir(root)
    cpu0 = cpu_seconds(server.pids())
    g = run_generator(gen, server.port, msgfile, sessions, messages, reuse, max_seconds)
    out: dict[str, Any] = {"ok": g["ok"], "detail": g["detail"]}
    accept = g["end"] - g["start"]
    out["accept_s"] = accept
    if "latency_ms" in g:
        out["latency_ms"] = g["latency_ms"]
    if not g["ok"]:
        return out
    out["accept_rate"] = messages / accept
    deadline = g["start"] + max_seconds
    target = base + messages
    n = count_maildir(root)
    while n < target and time.monotonic() < deadline:
        time.sleep(0.01)
        n = count_maildir(root)
    t_done = time.monotonic()
    out["cpu_s"] = cpu_seconds(server.pids()) - cpu0
    if n < target:
        out["ok"] = False
        out["detail"] = (f"only {n - base}/{messages} in Maildir new/ after {max_seconds:.0f} s")
        return out
    out["e2e_s"] = t_done - g["start"]
    out["e2e_rate"] = messages / out["e2e_s"]
    return out


def throughput_config(live: list[Server], gen: str, ns: int, z: int, msgfile: Path,
                      messages: int, runs: int, warmup: int, reuse: bool, max_s: float,
                      cfg: dict[str, Any], notes: list[str], settle: float = 0.0) -> None:
    """One configuration: start every server fresh, warm each up, then alternate their runs.

    Runs alternate between the servers (P, Q, Q, P, P, Q, ...) so that a disk or CPU whose speed
    drifts during the configuration (this VM's does) weighs on both alike; the idle one waits.
    """
    ready: list[Server] = []
    for srv in live:
        srv.stop()
        srv.reset()  # rule 6: every server's old files deleted first, then one settling pause
    if settle > 0:
        log(f"settling {settle:.0f} s after the resets (rule 6)")
        time.sleep(settle)
    for srv in live:
        label = f"{gen} {srv.name} s={ns} size={size_label(z)}"
        try:
            srv.fresh_start()
            w = one_run(srv, gen, msgfile, ns, warmup, reuse, max_s)
            if not w["ok"]:
                raise RuntimeError(f"warm-up failed: {w['detail']}")
            ready.append(srv)
            cfg["runs"][srv.name] = []
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            log(f"{label}: {e}")
            notes.append(f"{label}: " + " / ".join(str(e).strip().splitlines()[-4:])[:500])
            cfg["runs"][srv.name] = [{"ok": False, "detail": str(e)}]
            srv.stop()
    try:
        for i in range(runs):
            order = ready if i % 2 == 0 else list(reversed(ready))
            for srv in order:
                label = f"{gen} {srv.name} s={ns} size={size_label(z)}"
                try:
                    r = one_run(srv, gen, msgfile, ns, messages, reuse, max_s)
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                    r = {"ok": False, "detail": str(e)}
                cfg["runs"][srv.name].append(r)
                if r["ok"]:
                    log(f"{label} run {i + 1}: accept {r['accept_rate']:.0f}/s, "
                        f"e2e {r['e2e_rate']:.0f}/s ({r['e2e_s']:.2f} s)")
                else:
                    log(f"{label} run {i + 1}: FAILED {r['detail']}")
                    notes.append(f"{label} run {i + 1}: {r['detail']}")
            # a server that failed a run gets no more runs in this configuration
            ready = [s for s in ready if cfg["runs"][s.name][-1].get("ok")]
    finally:
        for srv in live:
            srv.stop()


# --------------------------------------------------------------------------- memory

def memory_test(server: Server, idle_sessions: int) -> dict[str, Any]:
    server.fresh_start()
    time.sleep(2)
    res: dict[str, Any] = {}

    def snapshot(pids: list[int]) -> tuple[int, int, int]:
        rss = pss = 0
        for p in pids:
            r, s = mem_kib(p)
            rss += r
            pss += s
        return rss, pss, len(pids)

    res["idle_rss"], res["idle_pss"], res["idle_procs"] = snapshot(server.pids())

    async def hold() -> None:
        idle = smtpload.IdleSessions("127.0.0.1", server.port, idle_sessions, timeout=90)
        await idle.open()
        res["opened"] = len(idle.conns)
        res["open_failed"] = idle.failed
        res["open_s"] = idle.elapsed
        await asyncio.sleep(3)
        res["busy_rss"], res["busy_pss"], res["busy_procs"] = snapshot(server.pids())
        sp = server.session_pids()
        if sp is not None:
            res["sess_rss"], res["sess_pss"], res["sess_procs"] = snapshot(sp)
        await idle.close()

    try:
        asyncio.run(hold())
    finally:
        server.stop()
    return res


# --------------------------------------------------------------------------- report

def fmt_rate(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def size_label(n: int) -> str:
    return f"{n // 1024} KB" if n % 1024 == 0 else f"{n} B"


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get("ok") and key in r]
    return statistics.median(vals) if vals else None


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_info(workdir: Path) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {"cores": str(os.cpu_count()), "cpu": cpu, "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "fs": f"{workdir} on {fsyncrate.fs_type(str(workdir))}"}


def report(meta: dict[str, Any], results: dict[str, Any]) -> str:
    L: list[str] = []
    m = meta["machine"]
    L.append(f"# Pigeon vs Postfix — {meta['started']}{' (quick)' if meta['quick'] else ''}")
    L.append("")
    L.append(f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}, "
             f"Python {m['python']}; data on {m['fs']}.")
    for s in meta["servers"]:
        L.append(f"- {s['describe']}" + (f" — **not measured: {s['unavailable']}**"
                                          if s["unavailable"] else ""))
    L.append(f"- Load: {meta['messages']} messages per run, {meta['runs']} run(s) per configuration "
             f"(medians), one untimed warm-up batch of {meta['warmup']}; "
             f"{'several messages per connection' if meta['reuse'] else 'one message per connection'}; "
             f"one recipient ({RCPT}); generator(s): {', '.join(meta['generators'])}; "
             f"{meta.get('settle', 0):.0f} s settling pause after each configuration's reset (rule 6).")
    L.append(f"- Duration: {meta['duration_s']:.0f} s; load average (1/5/15 min) before: "
             f"{meta['load'][0]}, after the throughput runs: {meta['load'][1]} (the benchmark's own processes, "
             "fsync waits included, raise it; a high value *before* means something else was "
             "running and skewing the numbers).")
    L.append("")

    fs = results.get("fsync")
    if fs:
        after = results.get("fsync_after")
        L.append("## (c) Physical limit: durable file creations")
        L.append("")
        L.append(f"4 KiB write + fsync + rename + directory fsync, in {fs['dir']} ({fs['fs']}), "
                 f"{fs['seconds']:.0f} s per cell" + (", measured before and after the throughput runs."
                                                      if after else "."))
        L.append("")
        L.append("| threads | creations/s |" + (" after |" if after else ""))
        L.append("|---:|---:|" + ("---:|" if after else ""))
        for i, r in enumerate(fs["results"]):
            extra = f" {after['results'][i]['rate']:,.0f} |" if after else ""
            L.append(f"| {r['threads']} | {r['rate']:,.0f} |{extra}")
        L.append("")

    tp = results.get("throughput", {})
    servers = [s["name"] for s in meta["servers"]]
    both = "pigeon" in servers and "postfix" in servers
    for gen in meta["generators"]:
        rows = tp.get(gen)
        if not rows:
            continue
        for key, title in (("accept_rate", "(a) Durable acceptance, messages/s (generator's view)"),
                           ("e2e_rate", "(b) End-to-end, messages/s (until all N are in Maildir new/)")):
            L.append(f"## {title} — {gen}")
            L.append("")
            L.append("Median [min–max] over the runs" + ("; then the median time for all N."
                                                         if key == "e2e_rate" else "."))
            L.append("")
            head = "| sessions | size |" + "".join(f" {s} |" for s in servers)
            sep = "|---:|---:|" + "---:|" * len(servers)
            if both:
                head += " pigeon/postfix |"
                sep += "---:|"
            L.append(head)
            L.append(sep)
            for cfg in rows:
                line = f"| {cfg['sessions']} | {size_label(cfg['size'])} |"
                med: dict[str, float | None] = {}
                for s in servers:
                    runs = cfg["runs"].get(s)
                    med[s] = median_of(runs, key) if runs else None
                    cell = fmt_rate(med[s])
                    vals = [r[key] for r in runs or [] if r.get("ok") and key in r]
                    if len(vals) > 1:
                        cell += f" [{fmt_rate(min(vals))}–{fmt_rate(max(vals))}]"
                    if runs and med[s] is not None and key == "e2e_rate":
                        e2e = median_of(runs, "e2e_s")
                        cell += f"; {e2e:.2f} s" if e2e is not None else ""
                    if runs and not all(r.get("ok") for r in runs):
                        bad = sum(1 for r in runs if not r.get("ok"))
                        cell += f" ⚠{bad}/{len(runs)} failed"
                    line += f" {cell} |"
                if both:
                    line += f" {fmt_ratio(med['pigeon'], med['postfix'])} |"
                L.append(line)
            L.append("")
        # CPU per message
        L.append(f"Server CPU time per message (ms, median; user+sys of all its processes) — {gen}:")
        L.append("")
        L.append("| sessions | size |" + "".join(f" {s} |" for s in servers))
        L.append("|---:|---:|" + "---:|" * len(servers))
        for cfg in rows:
            line = f"| {cfg['sessions']} | {size_label(cfg['size'])} |"
            for s in servers:
                runs = cfg["runs"].get(s) or []
                vals = [1000 * r["cpu_s"] / meta["messages"] for r in runs if r.get("ok") and "cpu_s" in r]
                line += f" {statistics.median(vals):.2f} |" if vals else " — |"
            L.append(line)
        L.append("")

    mem = results.get("memory", {})
    if mem:
        L.append(f"## (d) Memory: idle, and with {meta['idle_sessions']:,} idle SMTP sessions")
        L.append("")
        L.append("| server | idle RSS | idle PSS | with sessions: RSS | PSS | processes | "
                 "smtpd processes' RSS (PSS) | per session (PSS) | opened | time to open |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s, r in sorted(mem.items(), key=lambda kv: kv[0] != "postfix"):
            if "error" in r:
                L.append(f"| {s} | {r['error']} |||||||||")
                continue
            per = (r["busy_pss"] - r["idle_pss"]) / max(1, r["opened"])
            sess = (f"{r['sess_rss'] / 1024:,.1f} MiB ({r['sess_pss'] / 1024:,.1f} MiB) "
                    f"in {r['sess_procs']}" if "sess_rss" in r else "— (no process per session)")
            L.append(f"| {s} | {r['idle_rss'] / 1024:,.1f} MiB | {r['idle_pss'] / 1024:,.1f} MiB | "
                     f"{r['busy_rss'] / 1024:,.1f} MiB | {r['busy_pss'] / 1024:,.1f} MiB | "
                     f"{r['busy_procs']} | {sess} | {per:,.1f} KiB | "
                     f"{r['opened']}/{r['opened'] + r['open_failed']} | {r['open_s']:.1f} s |")
        L.append("")
        L.append("RSS counts shared pages once per process (so it overstates a many-process server); "
                 "PSS divides them among the sharers and is the fair total.")
        L.append("")

    notes = results.get("notes", [])
    if notes:
        L.append("## Notes and failures")
        L.append("")
        L.extend(f"- {n}" for n in notes)
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------- main

def parse_list(s: str) -> list[int]:
    out = []
    for x in s.split(","):
        x = x.strip().lower()
        mult = 1
        if x.endswith("k") or x.endswith("kb"):
            mult, x = 1024, x.rstrip("kb")
        out.append(int(x) * mult)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="Pigeon vs Postfix benchmark (loopback only)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, 1 run, fewer sizes")
    ap.add_argument("--servers", default="pigeon,postfix")
    ap.add_argument("--sessions", help="comma list (default 1,10,50)")
    ap.add_argument("--sizes", help="comma list, bytes or 1k/10k/100k (default 1k,10k,100k)")
    ap.add_argument("--messages", type=int, help="N per run (default 1000; quick 100)")
    ap.add_argument("--runs", type=int, help="runs per configuration (default 5; quick 1)")
    ap.add_argument("--generator", default="smtp-source", choices=["smtp-source", "smtpload", "both"])
    ap.add_argument("--reuse", action="store_true", help="several messages per connection")
    ap.add_argument("--max-run-seconds", type=float, default=120.0)
    ap.add_argument("--idle-sessions", type=int, help="for the memory test (default 1000; quick 100)")
    ap.add_argument("--fsync-seconds", type=float, help="per thread count (default 5; quick 1)")
    ap.add_argument("--skip", default="", help="comma list of: throughput,fsync,memory")
    ap.add_argument("--pigeon-cmd", default=str(REPO / ".venv" / "bin" / "pigeon"),
                    help="command that runs pigeon (default .venv/bin/pigeon)")
    ap.add_argument("--pigeon-extra-toml", default="", help="extra top-level TOML lines for pigeon")
    ap.add_argument("--pigeon-toml-tail", default=PIGEON_TOML_TAIL,
                    help="TOML tables appended after [listen] (default: connection limits raised "
                         "to 1100, as Postfix's smtpd maxproc is; '' for none)")
    ap.add_argument("--settle", type=float, help="seconds to wait after deleting the previous "
                    "configuration's files (rule 6; default 60, quick 0)")
    ap.add_argument("--pigeon-processes", type=int, default=os.cpu_count() or 1,
                    help="Pigeon's [smtp] processes (default: the number of CPUs, as an operator "
                         "of a busy MX would set it; Postfix runs as many processes as it likes)")
    ap.add_argument("--pigeon-port", type=int, default=2625)
    ap.add_argument("--postfix-port", type=int, default=2526)
    ap.add_argument("--workdir", default="/tmp/pigeon-bench")
    ap.add_argument("--out", help="Markdown output (default bench/results/<date>.md)")
    ap.add_argument("--from-json", metavar="JSON",
                    help="only re-render a saved results JSON as Markdown (beside it), run nothing")
    args = ap.parse_args()

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        text = report(saved["meta"], saved["results"])
        print(text)
        Path(args.out or Path(args.from_json).with_suffix(".md")).write_text(text + "\n")
        return 0

    quick = args.quick
    sessions = parse_list(args.sessions) if args.sessions else [1, 10, 50]
    sizes = parse_list(args.sizes) if args.sizes else ([1024, 102400] if quick else [1024, 10240, 102400])
    messages = args.messages or (100 if quick else 1000)
    runs = args.runs or (1 if quick else 5)
    idle_n = args.idle_sessions or (100 if quick else 1000)
    fsync_s = args.fsync_seconds or (1.0 if quick else 5.0)
    warmup = min(50, messages)
    settle = args.settle if args.settle is not None else (0.0 if quick else 60.0)
    skip = {s for s in args.skip.split(",") if s}
    generators = ["smtp-source", "smtpload"] if args.generator == "both" else [args.generator]
    if "smtp-source" in generators and not shutil.which("smtp-source"):
        log("smtp-source not found: run bench/setup-postfix.sh (installs Debian's postfix)")
        return 2

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    smtpload.raise_nofile(idle_n + 512)
    started = dt.datetime.now()
    t_start = time.monotonic()
    load_before = load_after = loadavg()

    servers: list[Server] = []
    for name in args.servers.split(","):
        if name == "postfix":
            servers.append(Postfix(workdir, args.postfix_port))
        elif name == "pigeon":
            tail = args.pigeon_toml_tail
            if args.pigeon_processes > 1:
                tail += f"[smtp]\nprocesses = {args.pigeon_processes}\n"
            servers.append(Pigeon(workdir, args.pigeon_port, shlex.split(args.pigeon_cmd),
                                  args.pigeon_extra_toml, tail))
        else:
            ap.error(f"unknown server {name}")
    # Postfix first in every table column order: servers as given, but report order fixed.
    for s in servers:
        s.setup()
        if s.unavailable:
            log(f"{s.name}: not measured: {s.unavailable}")
    live = [s for s in servers if not s.unavailable]

    results: dict[str, Any] = {"notes": [], "throughput": {}, "memory": {}}
    notes: list[str] = results["notes"]
    for s in servers:
        if s.unavailable:
            notes.append(f"{s.name} not measured: {s.unavailable}")

    msgfiles = {}
    for z in sizes:
        p = workdir / f"msg-{z}.eml"
        p.write_bytes(smtpload.make_message(z, SENDER, RCPT))
        msgfiles[z] = p

    try:
        if "fsync" not in skip:
            log(f"fsync rate in {workdir} ({fsync_s:.0f} s × 2)")
            fs = [fsyncrate.measure(str(workdir), t, fsync_s) for t in (1, 10)]
            results["fsync"] = {"dir": str(workdir), "fs": fsyncrate.fs_type(str(workdir)),
                                "seconds": fsync_s, "results": fs}
            if results["fsync"]["fs"] in ("tmpfs", "ramfs"):
                notes.append(f"{workdir} is on {results['fsync']['fs']}: fsync costs nothing there")

        if "throughput" not in skip:
            failures = {s.name: 0 for s in live}
            for gen in generators:
                rows: list[dict[str, Any]] = []
                results["throughput"][gen] = rows
                for ns in sessions:
                    for z in sizes:
                        cfg: dict[str, Any] = {"sessions": ns, "size": z, "runs": {}}
                        rows.append(cfg)
                        active = [s for s in live if failures[s.name] < 2]
                        throughput_config(active, gen, ns, z, msgfiles[z], messages, runs, warmup,
                                          args.reuse, args.max_run_seconds, cfg, notes, settle=settle)
                        for srv in active:
                            runs_ = cfg["runs"].get(srv.name, [])
                            failures[srv.name] = (failures[srv.name] + 1
                                                  if any(not r.get("ok") for r in runs_) else 0)
                            if failures[srv.name] == 2:
                                msg = (f"{srv.name} failed two configurations in a row: "
                                       "skipped in the remaining throughput configurations")
                                log(msg)
                                notes.append(msg)

        load_after = loadavg()
        if "fsync" not in skip and "throughput" not in skip:
            log(f"fsync rate again, after the throughput runs ({fsync_s:.0f} s × 2)")
            results["fsync_after"] = {
                "dir": str(workdir), "fs": fsyncrate.fs_type(str(workdir)), "seconds": fsync_s,
                "results": [fsyncrate.measure(str(workdir), t, fsync_s) for t in (1, 10)]}

        if "memory" not in skip:
            for srv in live:
                log(f"memory: {srv.name}, idle then {idle_n} idle sessions")
                try:
                    results["memory"][srv.name] = memory_test(srv, idle_n)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    results["memory"][srv.name] = {"error": str(e).splitlines()[0][:200]}
                    notes.append(f"memory {srv.name}: {e}")
    except KeyboardInterrupt:
        notes.append("interrupted: partial results")
        log("interrupted; stopping servers")
    finally:
        for srv in live:
            try:
                srv.stop()
            except Exception as e:  # noqa: BLE001 - best effort on the way out
                log(f"stopping {srv.name}: {e}")

    order = sorted(servers, key=lambda s: 0 if s.name == "postfix" else 1)
    meta = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "quick": quick,
        "machine": machine_info(workdir),
        "servers": [{"name": s.name, "describe": s.describe(), "unavailable": s.unavailable}
                    for s in order],
        "messages": messages, "runs": runs, "warmup": warmup, "reuse": args.reuse, "settle": settle,
        "generators": generators, "idle_sessions": idle_n,
        "duration_s": time.monotonic() - t_start,
        "load": [load_before, load_after],
        "argv": sys.argv[1:],
    }
    text = report(meta, results)
    print(text)
    if args.out:
        out = Path(args.out)
    else:
        resdir = HERE / "results"
        resdir.mkdir(exist_ok=True)
        stem = started.strftime("%Y-%m-%d") + ("-quick" if quick else "")
        out = resdir / f"{stem}.md"
        k = 2
        while out.exists():
            out = resdir / f"{stem}-{k}.md"
            k += 1
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    log(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
