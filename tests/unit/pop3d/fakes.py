"""Test helpers for pop3d: an in-memory store that keeps the Mailbox contract POP3 uses, a
password verifier, a real POP3 listener on loopback run in a background thread, and a raw
line client for what poplib hides (AUTH, pipelining, bad input).

The in-memory store stands in for ``pigeon.store.mailbox`` (being written alongside); it keeps
the parts of the contract POP3 relies on: UID order, sizes with CRLF, ``remove`` regardless of
flags, ``read`` raising an error with ``code == "EXPUNGEISSUED"`` for a message that is gone.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pigeon.auth.sasl import Authenticator
from pigeon.auth.throttle import AuthThrottle, ThrottleSettings
from pigeon.clocks import SystemClock
from pigeon.core.address import Address
from pigeon.net.listener import ConnectionLimits, Listener
from pigeon.net.tls import TlsManager, ensure_self_signed
from pigeon.pop3d import MaildropLocks, Pop3SessionFactory, Pop3Settings
from pigeon.pop3d.seams import Pop3Store
from tests.unit.listener_thread import ListenerThread

PASSWORD = "correct horse battery staple"


class FakeMailboxError(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True)
class Meta:
    uid: int
    size: int
    flags: frozenset[str] = frozenset()


@dataclass
class FakeFolder:
    uidvalidity: int = 1234
    uidnext: int = 1
    messages: dict[int, bytes] = field(default_factory=dict)
    flags: dict[int, frozenset[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reads: list[int] = field(default_factory=list)  # UIDs read, in order (read-ahead tests)

    def deliver(self, data: bytes) -> int:
        with self.lock:
            uid = self.uidnext
            self.uidnext += 1
            self.messages[uid] = data
            self.flags[uid] = frozenset()
            return uid


class FakeMailbox:
    def __init__(self, folder: FakeFolder, fail_read: bool = False) -> None:
        self.folder = folder
        self.uidvalidity = folder.uidvalidity
        self.closed = False
        self.fail_read = fail_read

    def messages(self) -> list[Meta]:
        with self.folder.lock:
            return [Meta(uid, len(data), self.folder.flags[uid]) for uid, data in sorted(self.folder.messages.items())]

    def read(self, uid: int) -> bytes:
        if self.fail_read:
            raise OSError("disk on fire")
        with self.folder.lock:
            data = self.folder.messages.get(uid)
            self.folder.reads.append(uid)
        if data is None:
            raise FakeMailboxError("EXPUNGEISSUED", f"message {uid} has been expunged")
        return data

    def remove(self, uids: Sequence[int]) -> list[int]:
        with self.folder.lock:
            gone = [u for u in uids if self.folder.messages.pop(u, None) is not None]
            for u in gone:
                self.folder.flags.pop(u, None)
            return gone

    def store(self, uids: Sequence[int], mode: Literal["set", "add", "remove"], flags: frozenset[str],
              unchangedsince: int | None = None) -> tuple[list[Meta], list[int]]:
        changed = []
        with self.folder.lock:
            for u in uids:
                if u in self.folder.flags:
                    old = self.folder.flags[u]
                    new = flags if mode == "set" else (old | flags if mode == "add" else old - flags)
                    self.folder.flags[u] = new
                    changed.append(Meta(u, len(self.folder.messages[u]), new))
        return changed, []

    def close(self) -> None:
        self.closed = True


class FakeAccount:
    def __init__(self, store: FakeStore, folder: FakeFolder) -> None:
        self.store = store
        self.folder = folder

    def select(self, name: str, readonly: bool = False) -> FakeMailbox:
        if name != "INBOX":
            raise FakeMailboxError("NONEXISTENT", name)
        if self.store.fail_select:
            raise OSError("index corrupt")
        box = FakeMailbox(self.folder, self.store.fail_read)
        self.store.opened.append(box)
        return box


class FakeStore:
    def __init__(self) -> None:
        self.folders: dict[str, FakeFolder] = {}
        self.opened: list[FakeMailbox] = []
        self.fail_select = False
        self.fail_read = False

    def folder(self, key: str) -> FakeFolder:
        return self.folders.setdefault(key, FakeFolder())

    def account(self, address: Address) -> FakeAccount:
        return FakeAccount(self, self.folder(address.key))


class Verifier:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def verify_password(self, address: str, password: str) -> bool:
        return self.users.get(address) == password


def message(n: int, body_lines: int = 3) -> bytes:
    head = f"From: sender@example.org\r\nTo: alice@example.test\r\nSubject: message {n}\r\n\r\n"
    return (head + "".join(f"line {i} of message {n}\r\n" for i in range(body_lines))).encode()


def tls_manager(tmp: Path) -> TlsManager:
    return TlsManager(ensure_self_signed("localhost", tmp))


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ServerThread(ListenerThread):
    """A real POP3 listener on 127.0.0.1 in a background event loop."""

    def __init__(self, store: Pop3Store, *, tls: TlsManager | None = None, implicit_tls: bool = False,
                 allow_plaintext_on_loopback: bool = True, max_bad_commands: int = 20,
                 throttle: ThrottleSettings | None = None, locks: MaildropLocks | None = None,
                 users: dict[str, str] | None = None, idle_timeout: float | None = None) -> None:
        super().__init__()
        self.store = store
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.settings = Pop3Settings(hostname="pop.example.test", allow_plaintext_on_loopback=allow_plaintext_on_loopback,
                                     max_bad_commands=max_bad_commands)
        self.throttle_settings = throttle or ThrottleSettings(failure_delay=0.0, max_failure_delay=0.0)
        self.locks = locks
        self.idle_timeout = idle_timeout  # below RFC 1939's floor only to test the autologout
        self.users = users if users is not None else {"alice@example.test": PASSWORD, "bob@example.test": PASSWORD}

    def __enter__(self) -> ServerThread:
        super().__enter__()
        return self

    async def make_listener(self) -> Listener:
        clock = SystemClock()
        auth = Authenticator(Verifier(self.users), AuthThrottle(self.throttle_settings, clock), clock)
        factory = Pop3SessionFactory(self.store, auth, self.tls, self.implicit_tls, self.settings, locks=self.locks)
        if self.idle_timeout is not None:
            factory.settings = dataclasses.replace(self.settings, idle_timeout=self.idle_timeout)
        return Listener("pop3", [("127.0.0.1", 0)], factory,
                        lambda: ConnectionLimits(100, 50, 30.0), b"-ERR [SYS/TEMP] Too many connections\r\n")


class RawClient:
    """A line client on a plain socket (optionally TLS-wrapped)."""

    def __init__(self, port: int, tls: bool = False) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            sock = client_tls().wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def cmd(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.line()

    def multiline(self) -> list[bytes]:
        """The body lines of a multi-line response (after its first line), still dot-stuffed."""
        out: list[bytes] = []
        while True:
            line = self.file.readline()
            if line in (b".\r\n", b""):
                return out
            out.append(line)

    def closed(self) -> bool:
        return self.file.read() == b""
