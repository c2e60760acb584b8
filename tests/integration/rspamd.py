"""A private rspamd (Debian's package) for the milter tests: its own configuration directory,
its own loopback ports, no Redis, never the packaged service.

``ensure_rspamd()`` installs the package when it is missing (``apt-get install rspamd``, as the
Makefile's ``test-deps`` does) and returns the binary's path, or None when it cannot (the
caller fails the test, it never skips it silently). ``Rspamd(tmp, dns_port)`` writes
``rspamd.conf`` (the packaged ``common.conf`` and module settings, with our sockets: a normal
worker and the proxy worker in milter mode, both on 127.0.0.1 ports of their own),
``local.d/options.inc`` (DNS: our loopback DNS server, so nothing leaves the machine) and
``local.d/milter_headers.conf`` (rspamd's result headers on every message), then runs
``rspamd -f`` and waits for the milter port. ``stop()`` ends that process by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.harness import free_port, wait_port

RSPAMD_USER = "_rspamd"  # the Debian package's account; root drops to it


def ensure_rspamd() -> str | None:
    found = shutil.which("rspamd")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "rspamd"]):
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
                           check=False)
    return shutil.which("rspamd")


class Rspamd:
    def __init__(self, tmp: Path, dns_port: int) -> None:
        self.dir = tmp
        self.milter_port = free_port()
        self.normal_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        for sub in ("local.d", "db", "run", "log"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        (tmp / "rspamd.conf").write_text(f"""
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{self.normal_port}";
    .include "$CONFDIR/worker-normal.inc"
}}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{self.milter_port}";
    milter = yes;
    timeout = 120s;
    upstream "local" {{
        default = yes;
        self_scan = yes;
    }}
    count = 1;
    spam_header = "X-Spam";
    reject_message = "Spam message rejected";
}}
""")
        (tmp / "local.d" / "options.inc").write_text(
            f'dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}\n'
            "local_addrs = [];\ndisable_hyperscan = true;\n")
        (tmp / "local.d" / "milter_headers.conf").write_text(
            'use = ["x-spamd-result", "x-rspamd-server", "x-rspamd-queue-id", "x-spam-status"];\n'
            "skip_local = false;\nskip_authenticated = false;\n")

    def start(self, binary: str) -> Rspamd:
        cmd = [binary, "-f", "-c", str(self.dir / "rspamd.conf"),
               "--var", f"LOCAL_CONFDIR={self.dir}", "--var", f"DBDIR={self.dir / 'db'}",
               "--var", f"RUNDIR={self.dir / 'run'}", "--var", f"LOGDIR={self.dir / 'log'}"]
        if os.geteuid() == 0:
            shutil.chown(self.dir, RSPAMD_USER, RSPAMD_USER)
            for sub in ("db", "run", "log"):
                shutil.chown(self.dir / sub, RSPAMD_USER, RSPAMD_USER)
            cmd += ["-u", RSPAMD_USER, "-g", RSPAMD_USER]
        out = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        try:
            wait_port("127.0.0.1", self.milter_port, timeout=60, proc=self.proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"rspamd did not start: {exc}\n{self.log()[-3000:]}") from exc
        return self

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "log/rspamd.log"):
            p = self.dir / name
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)  # the main process ends its own workers
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # its workers go with it
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
