#!/usr/bin/env python3
"""Hostile load on loopback: what one address without a login (or one logged-in user) can take.

What it measures, against a fresh ``pigeon serve`` with the default limits (issue #14):

| measure | how |
|---|---|
| connections held | ``--flood`` (2,000) silent TCP connections from 127.0.0.1, round-robin over smtp, submissions (465), imap, imaps (993), pop3; how many the server still holds after 3 s, and its memory (VmRSS) meanwhile |
| slowloris | ``--slow`` (40) connections that send one octet of a command line every 2 s; how many are still open after ``line_timeout`` + 5 s (the server runs with ``line_timeout = 10``) |
| pre-auth memory | ``--preauth`` (50) connections that each announce ``APPEND INBOX {52428799+}`` before LOGIN and then send 2 MiB; the server's VmRSS growth |
| answer time under attack | SMTP greetings (100, one at a time) on port 25 while a logged-in IMAP user sends hostile LIST patterns (``"***…x"``, ``"*%*%…"``) in a loop: median and worst greeting time |

Loopback only; the request loops are bounded in count and time; only the server this script
started is stopped, by its PID.

Reproduce: ``python3 bench/hostile.py`` (about 1 minute); figures go to stdout, and the last run's
are quoted in docs/security.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "victim@example.test", "bench-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Pigeon:
    def __init__(self, workdir: Path, line_timeout: bool = True) -> None:
        self.dir = workdir
        self.ports = {name: free_port() for name in ("smtp", "submissions", "imap", "imaps", "pop3")}
        listen = "".join(f'{name} = ["127.0.0.1:{port}"]\n' for name, port in self.ports.items())
        self.config = workdir / "pigeon.toml"
        self.config.write_text(
            f'hostname = "mx.example.test"\ndata_dir = "{workdir / "data"}"\ndomains = ["example.test"]\n'
            "[auth]\nallow_plaintext_on_loopback = true\n"
            f"[listen]\n{listen}[limits]\n" + ("line_timeout = 10\n" if line_timeout else ""))
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        self.cmd = [sys.executable, "-m", "pigeon.admin.cli", "--config", str(self.config)]
        subprocess.run([*self.cmd, "user", "add", USER, "--password-stdin"], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True, env=env)
        self.log = open(workdir / "serve.log", "ab")
        self.proc = subprocess.Popen([*self.cmd, "serve"], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        for port in self.ports.values():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        data = sock.recv(4096)
        while data:  # a greeting: still open; drain and look again
            data = sock.recv(4096)
        return False  # EOF
    except BlockingIOError:
        return True
    except OSError:
        return False


def connections_held(srv: Pigeon, n: int) -> dict[str, float]:
    base = vm_rss_kib(srv.proc.pid)
    socks = []
    services = list(srv.ports.values())
    for i in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", services[i % len(services)]), timeout=2))
        except OSError:
            pass
    time.sleep(3)
    held = sum(still_open(s) for s in socks)
    rss = vm_rss_kib(srv.proc.pid)
    for s in socks:
        s.close()
    return {"attempted": n, "connected": len(socks), "held": held, "rss_growth_mib": (rss - base) / 1024}


def slowloris(srv: Pigeon, n: int, line_timeout: float = 10.0) -> dict[str, float]:
    socks = [socket.create_connection(("127.0.0.1", srv.ports["smtp" if i % 2 else "imap"]), timeout=2)
             for i in range(n)]
    stop = time.monotonic() + line_timeout + 5
    while time.monotonic() < stop:
        for s in socks:
            try:
                s.send(b"x")
            except OSError:
                pass
        time.sleep(2)
    held = sum(still_open(s) for s in socks)
    for s in socks:
        s.close()
    return {"connections": n, "held_after_s": line_timeout + 5, "held": held}


def preauth_memory(srv: Pigeon, n: int, mib: int = 2) -> dict[str, float]:
    base = vm_rss_kib(srv.proc.pid)
    socks = []
    chunk = b"x" * 65536
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=2)
        s.recv(4096)
        s.sendall(b"a APPEND INBOX {52428799+}\r\n")
        socks.append(s)
    sent = 0
    for s in socks:
        s.settimeout(0.5)
        for _ in range(mib * 16):
            try:
                s.sendall(chunk)
                sent += len(chunk)
            except OSError:
                break
    time.sleep(1)
    rss = vm_rss_kib(srv.proc.pid)
    closed = sum(not still_open(s) for s in socks)
    for s in socks:
        s.close()
    return {"connections": n, "sent_mib": sent / 2**20, "closed_by_server": closed,
            "rss_growth_mib": (rss - base) / 1024}


def answer_time_under_list_attack(srv: Pigeon, probes: int = 100) -> dict[str, float]:
    stop = threading.Event()
    lists = [0]

    def attack() -> None:
        try:
            attack_once()
        except OSError:
            pass  # the server did not answer in time (the old code): the probes tell the story

    def attack_once() -> None:
        s = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=60)
        f = s.makefile("rb")
        f.readline()
        s.sendall(f'l LOGIN "{USER}" "{PASSWORD}"\r\n'.encode())
        while not f.readline().startswith(b"l "):
            pass
        patterns = ['"' + "*" * 30 + 'x"', '"' + "*%" * 300 + 'x"', '"' + "%*" * 100 + '"']
        i = 0
        while not stop.is_set():
            s.sendall(f'{i} LIST "" {patterns[i % len(patterns)]}\r\n'.encode())
            while True:
                line = f.readline()
                if not line or line.startswith(f"{i} ".encode()):
                    break
            if not line:
                return
            i += 1
            lists[0] = i
        s.close()

    t = threading.Thread(target=attack, daemon=True)
    t.start()
    time.sleep(0.5)
    times: list[float] = []
    t_start = time.perf_counter()
    for _ in range(probes):
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", srv.ports["smtp"]), timeout=10) as s:
                s.recv(200)
        except OSError:
            pass  # no greeting within 10 s: counted as 10 s
        times.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - t_start > 60:
            break  # bounded in time whatever the server does
        time.sleep(0.02)
    stop.set()
    t.join(10)
    return {"probes": len(times), "median_ms": statistics.median(times), "max_ms": max(times),
            "hostile_lists_answered": lists[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flood", type=int, default=2000)
    ap.add_argument("--slow", type=int, default=40)
    ap.add_argument("--preauth", type=int, default=50)
    ap.add_argument("--old", action="store_true",
                    help="a tree from before issue 14: its configuration has no line_timeout")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pigeon-hostile-"))
    srv = Pigeon(work, line_timeout=not args.old)
    try:
        print("idle server RSS MiB:", round(vm_rss_kib(srv.proc.pid) / 1024, 1), flush=True)
        print("connections held:", connections_held(srv, args.flood), flush=True)
        print("answer time under LIST attack:", answer_time_under_list_attack(srv), flush=True)
        print("pre-auth APPEND memory:", preauth_memory(srv, args.preauth), flush=True)
        print("slowloris:", slowloris(srv, args.slow), flush=True)
        tracebacks = (work / "serve.log").read_text(errors="replace").count("Traceback")
        print("tracebacks in the server log:", tracebacks)
        print("server log size KiB:", round((work / "serve.log").stat().st_size / 1024, 1))
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
