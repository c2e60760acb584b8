"""Start the real ``pigeon serve`` on loopback with a temporary data directory.

Used by the integration tests: a real process, real sockets, real files. Processes are ended by
their own PID only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIGEON = [sys.executable, "-m", "pigeon.admin.cli"]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open")


@dataclass
class Server:
    tmp: Path
    domains: list[str] = field(default_factory=lambda: ["example.test"])
    hostname: str = "mx.example.test"
    host: str = "127.0.0.1"
    extra_toml: str = ""
    limits_toml: str = ""
    proc: subprocess.Popen[bytes] | None = None
    smtp_port: int = 0

    def __post_init__(self) -> None:
        self.data_dir = self.tmp / "data"
        self.config_path = self.tmp / "pigeon.toml"
        self.log_path = self.tmp / "server.log"
        if not self.smtp_port:
            self.smtp_port = free_port(self.host)
        self.write_config()

    def write_config(self) -> None:
        domains = ", ".join(f'"{d}"' for d in self.domains)
        self.config_path.write_text(
            f'hostname = "{self.hostname}"\n'
            f'data_dir = "{self.data_dir}"\n'
            f"domains = [{domains}]\n"
            f"{self.extra_toml}\n"
            f"[listen]\nsmtp = [\"{self.host}:{self.smtp_port}\"]\n"
            f"[limits]\n{self.limits_toml}\n"
        )

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("PIGEON_CONFIG", None)
        return env

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*PIGEON, "--config", str(self.config_path), *args], input=input,
                             capture_output=True, text=True, env=self.env(), timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"pigeon {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def add_user(self, address: str, password: str = "secret-pw-123") -> None:
        self.cli("user", "add", address, "--password-stdin", input=password + "\n")

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*PIGEON, "--config", str(self.config_path), "serve"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env())
        wait_port(self.host, self.smtp_port, proc=self.proc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        self._log.close()
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def maildir(self, address: str) -> Path:
        local, domain = address.lower().rsplit("@", 1)
        return self.data_dir / "mail" / domain / local

    def messages(self, address: str) -> list[bytes]:
        d = self.maildir(address)
        out = []
        for sub in ("new", "cur"):
            p = d / sub
            if p.is_dir():
                out.extend(f.read_bytes() for f in sorted(p.iterdir()))
        return out

    def wait_messages(self, address: str, count: int, timeout: float = 15.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(address)
            if len(msgs) >= count or time.monotonic() > deadline:
                return msgs
            time.sleep(0.05)
