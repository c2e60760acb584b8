#!/usr/bin/env python3
"""Relay throughput, Pigeon vs Postfix: messages/s relayed to an SMTP sink over loopback (issue 3).

For each message size (10 KB, 1 KB) × injecting sessions (10, 50), every server gets N messages
(default 2,000) from ``smtp-source`` addressed to ``sink@relay.test``, a domain it relays, and
forwards them to one sink, Postfix's ``smtp-sink``, on 127.0.0.2. The time of a run is from the
injector's start until the sink has counted N more messages (``smtp-sink -c`` prints
``sess=S quit=Q mesg=M`` after every end of data and every session; a reader thread follows that
stream and notes the moment ``mesg`` reaches the target: no polling). Median of the runs and the
ratio pigeon/postfix; also the acceptance rate (the injector's own time), the servers' CPU per
message and the sink's sessions per message (connection reuse).

The servers (all running during a configuration, runs alternating between them):
  * ``postfix``: the bench instance of ``bench/setup-postfix.sh`` (imported from ``run.py``),
    then edited here: ``relay_domains = relay.test``, ``transport_maps`` sending relay.test to
    ``smtp:[127.0.0.2]:SINKPORT``, ``smtp``/``relay`` services added to master.cf,
    ``smtp_tls_security_level = none``. (Postfix resolves through libc, which cannot be pointed at
    a DNS server on another port than 53, so Postfix gets the explicit next hop; with
    ``[...]`` there is no MX lookup, and ``smtp_dns_support_level = disabled`` stays.)
  * ``pigeon-mx`` (the real routing): ``relay_domains = ["relay.test"]``, ``[dns] nameservers`` =
    a small authoritative DNS server on 127.0.0.1 run by this script (``tests/unit/dns/
    zone_server.py``, dnslib) with ``relay.test MX 10 mx.relay.test`` and ``mx.relay.test A
    127.0.0.2``, ``[delivery] remote_port = SINKPORT``.
  * ``pigeon-smarthost``: the same, with ``[delivery] smarthost = "127.0.0.2:SINKPORT"`` and
    ``smarthost_tls = "opportunistic"`` (the sink has no TLS) instead of MX routing.
  The sink is on 127.0.0.2, not 127.0.0.1: Pigeon listens on 127.0.0.1, and an MX with one of its
  own listening addresses is "self in the MX list" (a routing loop, 5.4.6), as for Postfix.

Rules:
  1. Loopback only: servers on 127.0.0.1, the sink on 127.0.0.2, the DNS server on 127.0.0.1; the
     Postfix instance keeps ``smtp_dns_support_level = disabled`` and error transports for
     anything but relay.test.
  2. Only processes this script started are stopped, by PID (the sink: its Popen PID; Pigeon:
     its Popen PID; Postfix: setup-postfix.sh stop, which uses the instance's master.pid).
  3. Each configuration starts every server fresh (run.py's ``fresh_start``), sends each an
     untimed warm-up of 50 messages and waits until the sink has them; then the runs alternate
     between the servers (order reversed every other round).
  4. Before each run the sink must be quiet (no new message for 0.3 s), so a straggler of the
     previous run cannot be counted for the next one.
  5. Every run is bounded by --max-run-seconds; a run that fails or times out is reported as
     failed (never as a number), and that server gets no more runs in the configuration.

Usage (as root, from the repository; dnslib comes from the virtualenv):
  .venv/bin/python bench/relay_bench.py          # postfix + pigeon-mx; 10 KB and 1 KB, 10 and 50
                                                 # sessions, N=2000, 5 runs (~6 min)
  .venv/bin/python bench/relay_bench.py --quick  # N=200, 1 run, 10 KB only
  .venv/bin/python bench/relay_bench.py --servers postfix,pigeon-smarthost --sizes 10k --runs 3
  .venv/bin/python bench/relay_bench.py --servers postfix,pigeon-mx,pigeon-smarthost
Writes bench/results/relay-<date>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "unit" / "dns"))

import smtpload  # noqa: E402
from run import (  # noqa: E402
    PIGEON_TOML_TAIL,
    Pigeon,
    Postfix,
    Server,
    cpu_seconds,
    fmt_rate,
    fmt_ratio,
    log,
    loadavg,
    machine_info,
    size_label,
)

RELAY_DOMAIN = "relay.test"
SENDER = "from@bench.test"
RCPT = f"sink@{RELAY_DOMAIN}"
SINK_HOST = "127.0.0.2"  # not 127.0.0.1: that is the servers' own address (see the docstring)
ROUTES = {
    "postfix": "relay_domains + transport_maps smtp:[127.0.0.2]:SINK",
    "pigeon-mx": "relay_domains, MX from the loopback DNS, remote_port = SINK",
    "pigeon-smarthost": 'relay_domains, smarthost = "127.0.0.2:SINK", smarthost_tls = "opportunistic"',
}
# Every server gets the same warm-up as in run.py.
WARMUP = 50


# --------------------------------------------------------------------------- the sink

class Sink:
    """Postfix's smtp-sink on SINK_HOST:port, its ``-c`` counters followed by a reader thread."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.errf: Any = None
        self.cond = threading.Condition()
        self.mesg = 0
        self.sess = 0
        self.t_last = time.monotonic()
        self.target: int | None = None
        self.t_hit: float | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if port_answers_on(SINK_HOST, self.port):
            raise RuntimeError(f"{SINK_HOST}:{self.port} is already in use")
        self.errf = open(self.workdir / "smtp-sink.err", "ab")
        # -u nobody: smtp-sink refuses to run as root; -a -C -F: no AUTH, XCLIENT, XFORWARD
        # announced (a plain MX); backlog 1000 (more than 50 sessions + 20 relay connections).
        argv = ["smtp-sink", "-u", "nobody", "-a", "-C", "-F", "-c", f"{SINK_HOST}:{self.port}", "1000"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.errf)
        self.thread = threading.Thread(target=self._read, name="sink-reader", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not port_answers_on(SINK_HOST, self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("smtp-sink did not start (see smtp-sink.err)")
            time.sleep(0.05)

    def _read(self) -> None:
        if self.proc is None or self.proc.stdout is None:
            return
        fd = self.proc.stdout.fileno()
        buf = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            *records, buf = buf.split(b"\r")
            if not records:
                continue
            # "sess=S quit=Q mesg=M": the last complete record has the current counts.
            fields = dict(f.split(b"=", 1) for f in records[-1].split() if b"=" in f)
            with self.cond:
                try:
                    self.mesg = int(fields.get(b"mesg", self.mesg))
                    self.sess = int(fields.get(b"sess", self.sess))
                except ValueError:
                    log(f"smtp-sink: unexpected counter line {records[-1]!r}")
                    continue
                self.t_last = now
                if self.target is not None and self.t_hit is None and self.mesg >= self.target:
                    self.t_hit = now
                self.cond.notify_all()

    def counts(self) -> tuple[int, int]:
        with self.cond:
            return self.mesg, self.sess

    def wait_quiet(self, quiet: float = 0.3, limit: float = 30.0) -> None:
        """Return once no counter changed for ``quiet`` seconds (Rule 4)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.cond:
                idle = time.monotonic() - self.t_last
            if idle >= quiet:
                return
            time.sleep(quiet - idle + 0.01)
        raise RuntimeError(f"the sink is still receiving after {limit:.0f} s")

    def arm(self, target: int) -> None:
        with self.cond:
            self.target, self.t_hit = target, None
            if self.mesg >= target:
                self.t_hit = time.monotonic()

    def wait_hit(self, deadline: float) -> float | None:
        """The monotonic time at which ``mesg`` reached the armed target (None: deadline passed)."""
        with self.cond:
            self.cond.wait_for(lambda: self.t_hit is not None, max(0.0, deadline - time.monotonic()))
            return self.t_hit

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self.thread is not None:
                self.thread.join(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        if self.errf is not None:
            self.errf.close()
            self.errf = None


def port_answers_on(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- the servers

class RelayPostfix(Postfix):
    """run.py's Postfix instance, turned into a relay for relay.test to the sink (see docstring)."""

    def __init__(self, workdir: Path, port: int, sink_port: int) -> None:
        super().__init__(workdir, port)
        self.sink_port = sink_port

    def setup(self) -> None:
        super().setup()
        if self.unavailable:
            return
        etc = self.dir / "etc"
        transport = etc / "transport"
        transport.write_text(f"{RELAY_DOMAIN} smtp:[{SINK_HOST}]:{self.sink_port}\n")
        transport.chmod(0o644)
        settings = {
            "relay_domains": RELAY_DOMAIN,
            "relay_transport": "relay",
            "transport_maps": f"texthash:{transport}",
            "smtp_tls_security_level": "none",
            # Debian's stock master.cf gives relay/smtp the same limits as the others: 100
            # processes (default_process_limit, set by setup-postfix.sh), 20 per destination.
        }
        r = subprocess.run(["postconf", "-c", str(etc), "-e",
                            *(f"{k}={v}" for k, v in settings.items())],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.unavailable = f"postconf -e failed: {r.stderr.strip()}"
            return
        with open(etc / "master.cf", "a", encoding="ascii") as f:
            f.write("# Added by bench/relay_bench.py: the SMTP client, for relay.test only.\n"
                    "smtp             unix  -       -       n       -       -       smtp\n"
                    "relay            unix  -       -       n       -       -       smtp\n")
        r = subprocess.run(["postfix", "-c", str(etc), "check"], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            self.unavailable = f"postfix check failed: {r.stderr.strip()}"


def make_pigeon(name: str, workdir: Path, port: int, cmd: list[str], sink_port: int,
                dns_port: int, smarthost_verify: bool = True, processes: int = 1) -> Pigeon:
    if name == "pigeon-mx":
        delivery = f"[delivery]\nremote_port = {sink_port}\n"
    elif name == "pigeon-smarthost":
        delivery = (f'[delivery]\nsmarthost = "{SINK_HOST}:{sink_port}"\n'
                    'smarthost_tls = "opportunistic"\n'
                    f"smarthost_tls_verify = {'true' if smarthost_verify else 'false'}\n")
    else:
        raise ValueError(name)
    tail = (PIGEON_TOML_TAIL
            # Both variants: only the loopback DNS server, never the system's resolver.
            + f'[dns]\nnameservers = ["127.0.0.1:{dns_port}"]\n' + delivery
            + f"[smtp]\nprocesses = {processes}\n")
    p = Pigeon(workdir / name, port, cmd, f'relay_domains = ["{RELAY_DOMAIN}"]', tail)
    p.name = name
    return p


# --------------------------------------------------------------------------- one run

def one_run(server: Server, sink: Sink, msgfile: Path, sessions: int, messages: int,
            max_seconds: float) -> dict[str, Any]:
    sink.wait_quiet()
    base, sess0 = sink.counts()
    sink.arm(base + messages)
    pids = server.pids()
    cpu0 = cpu_seconds(pids)
    spid = sink.pid()
    scpu0 = cpu_seconds([spid]) if spid else 0.0
    argv = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-F", str(msgfile),
            "-f", SENDER, "-t", RCPT, "-M", "smtp-source.bench.test", f"127.0.0.1:{server.port}"]
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=max_seconds)
    except subprocess.TimeoutExpired:
        return {"ok": False, "detail": f"smtp-source still running after {max_seconds:.0f} s"}
    t_acc = time.monotonic()
    out: dict[str, Any] = {"ok": r.returncode == 0, "accept_s": t_acc - t0,
                           "accept_rate": messages / (t_acc - t0)}
    if r.returncode != 0:
        out["detail"] = f"smtp-source exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"
        return out
    hit = sink.wait_hit(t0 + max_seconds)
    out["cpu_s"] = cpu_seconds(server.pids()) - cpu0
    out["sink_cpu_s"] = (cpu_seconds([spid]) - scpu0) if spid else None
    mesg, sess = sink.counts()
    out["sink_sessions"] = sess - sess0
    if hit is None:
        out["ok"] = False
        out["detail"] = f"only {mesg - base}/{messages} at the sink after {max_seconds:.0f} s"
        return out
    out["relay_s"] = hit - t0
    out["relay_rate"] = messages / out["relay_s"]
    return out


def run_config(servers: list[Server], sink: Sink, ns: int, size: int, msgfile: Path,
               messages: int, runs: int, max_s: float, cfg: dict[str, Any],
               notes: list[str]) -> None:
    ready: list[Server] = []
    for srv in servers:
        label = f"{srv.name} s={ns} size={size_label(size)}"
        cfg["runs"][srv.name] = []
        try:
            srv.fresh_start()
            w = one_run(srv, sink, msgfile, ns, WARMUP, max_s)
            if not w["ok"]:
                raise RuntimeError(f"warm-up failed: {w['detail']}")
            ready.append(srv)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
            log(f"{label}: {e}")
            notes.append(f"{label}: " + " / ".join(str(e).strip().splitlines()[-4:])[:500])
            cfg["runs"][srv.name].append({"ok": False, "detail": str(e)[:500]})
            srv.stop()
    try:
        for i in range(runs):
            order = ready if i % 2 == 0 else list(reversed(ready))
            for srv in order:
                label = f"{srv.name} s={ns} size={size_label(size)}"
                try:
                    res = one_run(srv, sink, msgfile, ns, messages, max_s)
                except (RuntimeError, OSError) as e:
                    res = {"ok": False, "detail": str(e)}
                cfg["runs"][srv.name].append(res)
                if res["ok"]:
                    log(f"{label} run {i + 1}: relayed {res['relay_rate']:.0f}/s "
                        f"({res['relay_s']:.2f} s), accepted {res['accept_rate']:.0f}/s, "
                        f"CPU {1000 * res['cpu_s'] / messages:.2f} ms/msg, "
                        f"sink sessions {res['sink_sessions']}")
                else:
                    log(f"{label} run {i + 1}: FAILED {res['detail']}")
                    notes.append(f"{label} run {i + 1}: {res['detail']}")
            ready = [s for s in ready if cfg["runs"][s.name][-1].get("ok")]
    finally:
        for srv in servers:
            srv.stop()


# --------------------------------------------------------------------------- report

def med(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def cell(runs: list[dict[str, Any]], key: str, time_key: str | None = None) -> str:
    m = med(runs, key)
    if m is None:
        return "failed" if runs else "—"
    vals = [r[key] for r in runs if r.get("ok") and key in r]
    s = fmt_rate(m)
    if len(vals) > 1:
        s += f" [{fmt_rate(min(vals))}–{fmt_rate(max(vals))}]"
    if time_key:
        t = med(runs, time_key)
        s += f"; {t:.2f} s" if t is not None else ""
    bad = sum(1 for r in runs if not r.get("ok"))
    if bad:
        s += f" ⚠{bad}/{len(runs)} failed"
    return s


def report(meta: dict[str, Any], rows: list[dict[str, Any]], notes: list[str]) -> str:
    names = [s["name"] for s in meta["servers"] if not s["unavailable"]]
    pigeons = [n for n in names if n.startswith("pigeon")]
    has_pf = "postfix" in names
    n = meta["messages"]
    L = [f"# Relay throughput, Pigeon vs Postfix — {meta['started']}{' (quick)' if meta['quick'] else ''}", ""]
    m = meta["machine"]
    L.append(f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}, "
             f"Python {m['python']}; data on {m['fs']}.")
    for s in meta["servers"]:
        route = ROUTES.get(s["name"], "")
        if s["name"] == "pigeon-smarthost":
            route += f", smarthost_tls_verify = {meta['smarthost_tls_verify']}"
        L.append(f"- {s['name']} ({route}): {s['describe']}"
                 + (f" — **not measured: {s['unavailable']}**" if s["unavailable"] else ""))
    L.append(f"- Sink: `smtp-sink -u nobody -a -C -F -c {SINK_HOST}:{meta['sink_port']} 1000` "
             "(Postfix's; counts from its `-c` counters).")
    L.append(f"- Load: smtp-source, one message per connection, {n} messages per run to {RCPT}, "
             f"{meta['runs']} run(s) per configuration, alternating servers, after an untimed "
             f"warm-up of {WARMUP}. Duration {meta['duration_s']:.0f} s; load average before "
             f"{meta['load'][0]}, after {meta['load'][1]}.")
    L.append("")
    L.append("## Relayed, messages/s (injector start → N counted at the sink)")
    L.append("")
    L.append("Median [min–max]; then the median time for all N.")
    L.append("")
    head = "| sessions | size |" + "".join(f" {x} |" for x in names)
    sep = "|---:|---:|" + "---:|" * len(names)
    if has_pf:
        head += "".join(f" {p}/postfix |" for p in pigeons)
        sep += "---:|" * len(pigeons)
    L += [head, sep]
    for cfg in rows:
        line = f"| {cfg['sessions']} | {size_label(cfg['size'])} |"
        line += "".join(f" {cell(cfg['runs'].get(x, []), 'relay_rate', 'relay_s')} |" for x in names)
        if has_pf:
            pf = med(cfg["runs"].get("postfix", []), "relay_rate")
            line += "".join(f" {fmt_ratio(med(cfg['runs'].get(p, []), 'relay_rate'), pf)} |"
                            for p in pigeons)
        L.append(line)
    L.append("")
    L.append("## Accepted, messages/s (the injector's own time)")
    L.append("")
    L += [head, sep]
    for cfg in rows:
        line = f"| {cfg['sessions']} | {size_label(cfg['size'])} |"
        line += "".join(f" {cell(cfg['runs'].get(x, []), 'accept_rate')} |" for x in names)
        if has_pf:
            pf = med(cfg["runs"].get("postfix", []), "accept_rate")
            line += "".join(f" {fmt_ratio(med(cfg['runs'].get(p, []), 'accept_rate'), pf)} |"
                            for p in pigeons)
        L.append(line)
    L.append("")
    L.append("## Server CPU per message (ms, median; user+sys of all its processes), "
             "and sink sessions per message (median)")
    L.append("")
    L.append("| sessions | size |" + "".join(f" {x} CPU |" for x in names)
             + "".join(f" {x} sink sess/msg |" for x in names) + " sink CPU ms/msg |")
    L.append("|---:|---:|" + "---:|" * (2 * len(names) + 1))
    for cfg in rows:
        line = f"| {cfg['sessions']} | {size_label(cfg['size'])} |"
        sink_cpu: list[float] = []
        for x in names:
            c = med(cfg["runs"].get(x, []), "cpu_s")
            line += f" {1000 * c / n:.2f} |" if c is not None else " — |"
        for x in names:
            runs = cfg["runs"].get(x, [])
            s = med(runs, "sink_sessions")
            line += f" {s / n:.3f} |" if s is not None else " — |"
            sink_cpu += [r["sink_cpu_s"] for r in runs if r.get("ok") and r.get("sink_cpu_s") is not None]
        line += f" {1000 * statistics.median(sink_cpu) / n:.2f} |" if sink_cpu else " — |"
        L.append(line)
    L.append("")
    if notes:
        L += ["## Notes and failures", ""] + [f"- {x}" for x in notes] + [""]
    return "\n".join(L)


# --------------------------------------------------------------------------- main

def parse_sizes(s: str) -> list[int]:
    out = []
    for x in s.split(","):
        x = x.strip().lower()
        mult = 1
        if x.endswith("k") or x.endswith("kb"):
            mult, x = 1024, x.rstrip("kb")
        out.append(int(x) * mult)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="relay throughput to an smtp-sink, Pigeon vs Postfix")
    ap.add_argument("--quick", action="store_true", help="N=200, 1 run, 10 KB, 10 and 50 sessions")
    ap.add_argument("--servers", default="postfix,pigeon-mx",
                    help="comma list of postfix, pigeon-mx, pigeon-smarthost (default: the first two)")
    ap.add_argument("--sessions", default="10,50")
    ap.add_argument("--sizes", help="comma list, bytes or 1k/10k (default 10k,1k; quick 10k)")
    ap.add_argument("--messages", type=int, help="N per run (default 2000; quick 200)")
    ap.add_argument("--runs", type=int, help="runs per configuration (default 5; quick 1)")
    ap.add_argument("--max-run-seconds", type=float, default=120.0)
    ap.add_argument("--smarthost-tls-verify", choices=["true", "false"], default="true",
                    help="pigeon-smarthost's smarthost_tls_verify (default true, Pigeon's default; "
                         "the sink has no TLS, so it only changes the cost of the TLS context)")
    ap.add_argument("--pigeon-processes", type=int, default=1,
                    help="Pigeon's [smtp] processes (default 1; each SMTP worker relays what it accepted)")
    ap.add_argument("--pigeon-cmd", default=str(REPO / ".venv" / "bin" / "pigeon"))
    # Ports apart from run.py's (2625/2526), so both harnesses can exist side by side.
    ap.add_argument("--pigeon-mx-port", type=int, default=2725)
    ap.add_argument("--pigeon-smarthost-port", type=int, default=2726)
    ap.add_argument("--postfix-port", type=int, default=2727)
    ap.add_argument("--sink-port", type=int, default=2728, help=f"on {SINK_HOST}")
    ap.add_argument("--workdir", default="/tmp/pigeon-relay-bench")
    ap.add_argument("--out", help="Markdown output (default bench/results/relay-<date>.md)")
    args = ap.parse_args()

    quick = args.quick
    sessions = [int(x) for x in args.sessions.split(",")]
    sizes = parse_sizes(args.sizes) if args.sizes else ([10240] if quick else [10240, 1024])
    messages = args.messages or (200 if quick else 2000)
    runs = args.runs or (1 if quick else 5)
    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            log(f"{tool} not found: run bench/setup-postfix.sh (installs Debian's postfix)")
            return 2
    try:
        from zone_server import ZoneServer  # tests/unit/dns/zone_server.py; needs dnslib
    except ImportError as e:
        log(f"cannot import the DNS test server ({e}): run with .venv/bin/python")
        return 2

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    smtpload.raise_nofile(4096)
    started = dt.datetime.now()
    t_start = time.monotonic()
    load_before = loadavg()

    zone = {RELAY_DOMAIN: [("MX", f"10 mx.{RELAY_DOMAIN}")], f"mx.{RELAY_DOMAIN}": [("A", SINK_HOST)]}
    dns = ZoneServer(zone)
    sink = Sink(args.sink_port, workdir)
    cmd = shlex.split(args.pigeon_cmd)
    servers: list[Server] = []
    for name in args.servers.split(","):
        if name == "postfix":
            servers.append(RelayPostfix(workdir, args.postfix_port, args.sink_port))
        elif name in ("pigeon-mx", "pigeon-smarthost"):
            port = args.pigeon_mx_port if name == "pigeon-mx" else args.pigeon_smarthost_port
            servers.append(make_pigeon(name, workdir, port, cmd, args.sink_port, dns.port,
                                       args.smarthost_tls_verify == "true", args.pigeon_processes))
        else:
            ap.error(f"unknown server {name}")
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    msgfiles = {}
    for z in sizes:
        p = workdir / f"relay-msg-{z}.eml"
        p.write_bytes(smtpload.make_message(z, SENDER, RCPT))
        msgfiles[z] = p

    dns.start()
    live: list[Server] = []
    try:
        sink.start()
        for s in servers:
            s.setup()
            if s.unavailable:
                log(f"{s.name}: not measured: {s.unavailable}")
                notes.append(f"{s.name} not measured: {s.unavailable}")
        live = [s for s in servers if not s.unavailable]
        for z in sizes:
            for ns in sessions:
                cfg: dict[str, Any] = {"sessions": ns, "size": z, "runs": {}}
                rows.append(cfg)
                run_config(live, sink, ns, z, msgfiles[z], messages, runs, args.max_run_seconds,
                           cfg, notes)
    except KeyboardInterrupt:
        notes.append("interrupted: partial results")
        log("interrupted; stopping")
    finally:
        for srv in live:
            try:
                srv.stop()
            except Exception as e:  # noqa: BLE001 - best effort on the way out
                log(f"stopping {srv.name}: {e}")
        sink.stop()
        dns.stop()

    order = sorted(servers, key=lambda s: 0 if s.name == "postfix" else 1)
    meta = {
        "started": started.strftime("%Y-%m-%d %H:%M"), "quick": quick,
        "machine": machine_info(workdir),
        "servers": [{"name": s.name, "describe": s.describe(), "unavailable": s.unavailable}
                    for s in order],
        "messages": messages, "runs": runs, "sink_port": args.sink_port,
        "smarthost_tls_verify": args.smarthost_tls_verify,
        "duration_s": time.monotonic() - t_start, "load": [load_before, loadavg()],
        "dns_queries": len(dns.queries), "argv": sys.argv[1:],
    }
    text = report(meta, rows, notes)
    print(text)
    if args.out:
        out = Path(args.out)
    else:
        resdir = HERE / "results"
        resdir.mkdir(exist_ok=True)
        stem = "relay-" + started.strftime("%Y-%m-%d") + ("-quick" if quick else "")
        out = resdir / f"{stem}.md"
        k = 2
        while out.exists():
            out = resdir / f"{stem}-{k}.md"
            k += 1
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows, "notes": notes}, indent=1) + "\n")
    log(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
