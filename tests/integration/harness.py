"""Start the real ``pigeon serve`` on loopback with a temporary data directory.

Used by the integration tests: a real process, real sockets, real files. Processes are ended by
their own PID only.

- ``Server``: writes ``pigeon.toml`` (``extra_toml`` goes at top level before ``[listen]``, so it
  may open its own sections; ``limits_toml`` goes inside ``[limits]``), runs the CLI (``cli``,
  ``add_user``, ``queue_list``/``queue_show`` as JSON), starts/stops/kills the server, reads its
  log (``log``, ``wait_log``, ``mail_events``), its Maildirs (``messages``, ``message_paths``,
  ``wait_messages``, laid out by ``pigeon.store.names``) and its memory (``vm_kib``).
- ``RawClient``: a byte-exact SMTP client on a plain socket (``send``, ``reply``, ``cmd``,
  ``data``, ``closed``) for what smtplib would hide or fix up.
- ``queued_id``: the queue id in a "250 ... queued as ID" reply.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.unit.dns.zone_server import ZoneServer

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


_ISOLATED_DNS: list[ZoneServer] = []

# The port-25 checks are on by default and refuse a From: in our own domains that does not pass
# DMARC (issue 16). The tests written before them send such mail from 127.0.0.1: for them the
# harness trusts that one address (and only it: loopback is not exempt in the product). The
# inbound tests bring their own [inbound] section and send from other 127.0.0.x addresses.
LEGACY_INBOUND_TOML = '[inbound]\ntrusted_networks = ["127.0.0.1/32"]\n'



def isolated_dns_toml() -> str:
    """``[dns]`` pointing at a loopback DNS server that answers SERVFAIL to everything.

    Tests never query real DNS (traffic stays on loopback): mail to another domain is deferred
    (a temporary DNS failure) unless a test brings its own zones.
    """
    if not _ISOLATED_DNS:
        _ISOLATED_DNS.append(ZoneServer(servfail={"*"}).start())
    host, port = _ISOLATED_DNS[0].endpoint
    return f'[dns]\nnameservers = ["{host}:{port}"]\n'


@dataclass
class Server:
    tmp: Path
    domains: list[str] = field(default_factory=lambda: ["example.test"])
    hostname: str = "mx.example.test"
    host: str = "127.0.0.1"
    extra_toml: str = ""
    limits_toml: str = ""
    listen_toml: str = ""  # more [listen] keys (submission, imap…)
    proc: subprocess.Popen[bytes] | None = None
    smtp_port: int = 0
    # Another interpreter of the same Python version (one a dropped user can run), given this
    # one's site-packages (the privilege-drop tests).
    python: str = ""

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
            f"{'' if '[dns]' in self.extra_toml else isolated_dns_toml()}"
            f"{'' if '[inbound]' in self.extra_toml else LEGACY_INBOUND_TOML}"
            f"[listen]\nsmtp = [\"{self.host}:{self.smtp_port}\"]\n{self.listen_toml}\n"
            f"[limits]\n{self.limits_toml}\n"
        )

    @property
    def pigeon(self) -> list[str]:
        return [self.python, *PIGEON[1:]] if self.python else PIGEON

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        extra = [sysconfig.get_paths()["purelib"]] if self.python else []
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *extra, env.get("PYTHONPATH", "")])
        env.pop("PIGEON_CONFIG", None)
        return env

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*self.pigeon, "--config", str(self.config_path), *args], input=input,
                             capture_output=True, text=True, env=self.env(), timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"pigeon {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def add_user(self, address: str, password: str = "secret-pw-123") -> None:
        self.cli("user", "add", address, "--password-stdin", input=password + "\n")

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.pigeon, "--config", str(self.config_path), "serve"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env())
        wait_port(self.host, self.smtp_port, proc=self.proc)
        # The other listeners (listen_toml) open just after SMTP's: wait for them too.
        for host, port in re.findall(r'"\[?([0-9a-fA-F.:]+?)\]?:(\d+)"', self.listen_toml):
            wait_port(host, int(port), proc=self.proc)

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
        """The user's Maildir, laid out as the server lays it out (``pigeon.store.names``)."""
        from pigeon.core.address import parse_address
        from pigeon.store.names import mailbox_components

        domain_dir, local_dir = mailbox_components(parse_address(address, utf8=True))
        return self.data_dir / "mail" / domain_dir / local_dir

    def messages(self, address: str) -> list[bytes]:
        d = self.maildir(address)
        out: list[bytes] = []
        for sub in ("new", "cur"):
            p = d / sub
            if p.is_dir():
                out.extend(f.read_bytes() for f in sorted(p.iterdir()))
        return out

    def wait_messages(self, address: str, count: int, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(address)
            if len(msgs) >= count or time.monotonic() > deadline:
                return msgs
            time.sleep(0.05)

    # -- extensions used by the integration suite ------------------------------------------------

    def find_message(self, address: str, token: str, folder: str = "", timeout: float = 20.0) -> bytes | None:
        """The first message of ``address``'s ``folder`` (INBOX when empty) holding ``token``,
        waited for up to ``timeout`` seconds; None when it never arrives."""
        base = self.maildir(address) / (f".{folder}" if folder else "")
        deadline = time.monotonic() + timeout
        while True:
            for sub in ("new", "cur"):
                d = base / sub
                if d.is_dir():
                    for f in d.iterdir():
                        try:
                            data = f.read_bytes()
                        except FileNotFoundError:  # renamed by a flag change meanwhile
                            continue
                        if token.encode() in data:
                            return data
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server not running")
        return self.proc.pid

    def message_paths(self, address: str) -> list[Path]:
        d = self.maildir(address)
        out: list[Path] = []
        for sub in ("new", "cur"):
            p = d / sub
            if p.is_dir():
                out.extend(sorted(p.iterdir()))
        return out

    def wait_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait until ``pattern`` (a regular expression) matches the operator's log."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log, re.MULTILINE)
            if m is not None:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"log never matched {pattern!r}:\n{self.log[-4000:]}")
            time.sleep(0.05)

    def mail_events(self, event: str) -> list[str]:
        """The operator's log lines for ``event`` (``received``, ``delivered``, ``reject``…)."""
        return re.findall(rf"pigeon\.mail: \S+ {event} .*$", self.log, re.MULTILINE)

    def count_events(self, event: str) -> int:
        return len(self.mail_events(event))

    def queue_list(self) -> list[dict[str, Any]]:
        out = json.loads(self.cli("queue", "list", "--json").stdout)
        assert isinstance(out, list)
        return out

    def queue_show(self, qid: str) -> dict[str, Any]:
        out = json.loads(self.cli("queue", "show", qid, "--json").stdout)
        assert isinstance(out, dict)
        return out

    def wait_queue(self, predicate: Callable[[list[dict[str, Any]]], bool],
                   timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            q = self.queue_list()
            if predicate(q) or time.monotonic() > deadline:
                return q
            time.sleep(0.2)

    def vm_kib(self, field_name: str) -> int:
        """A ``/proc/PID/status`` memory field (VmRSS, VmHWM…) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise LookupError(field_name)

    def smtp(self, timeout: float = 15.0) -> RawClient:
        return RawClient(self.host, self.smtp_port, timeout)


QUEUED_AS = re.compile(r"queued as ([0-9A-Z]+)")


class RawClient:
    """A byte-exact SMTP client on a plain socket: send what you write, read whole replies."""

    def __init__(self, host: str, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: its code and its text lines (without the code)."""
        lines: list[str] = []
        while True:
            line = self._line().decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError(f"not an SMTP reply line: {line!r}")
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines

    def replies(self, n: int) -> list[tuple[int, list[str]]]:
        return [self.reply() for _ in range(n)]

    def cmd(self, line: str | bytes) -> tuple[int, list[str]]:
        data = line.encode("utf-8") if isinstance(line, str) else line
        self.send(data + b"\r\n")
        return self.reply()

    def greet(self, ehlo: str = "client.example") -> list[str]:
        code, _ = self.reply()
        if code != 220:
            raise AssertionError(f"greeting {code}")
        code, lines = self.cmd(f"EHLO {ehlo}")
        if code != 250:
            raise AssertionError(f"EHLO {code} {lines}")
        return lines

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (EOF) within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            return True

    def data(self, message: bytes) -> tuple[int, list[str]]:
        """DATA with ``message`` (already CRLF, dot-stuffed by the caller if needed)."""
        code, lines = self.cmd("DATA")
        if code != 354:
            return code, lines
        end = b"" if message.endswith(b"\r\n") else b"\r\n"
        self.send(message + end + b".\r\n")
        return self.reply()


def queued_id(lines: list[str]) -> str:
    m = QUEUED_AS.search(" ".join(lines))
    if m is None:
        raise AssertionError(f"no queue id in {lines!r}")
    return m.group(1)
