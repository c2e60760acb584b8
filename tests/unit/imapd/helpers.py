"""Test helpers for imapd: a real ``Listener`` running ``ImapSessionFactory`` over a real
``MailStore`` in tmp_path, in its own event-loop thread, and a raw line client for byte-exact
checks that imaplib hides (literals, LITERAL+, IDLE, untagged updates)."""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
from pathlib import Path

from pigeon.auth.sasl import Authenticator
from pigeon.auth.throttle import AuthThrottle, ThrottleSettings
from pigeon.clocks import SystemClock
from pigeon.config import AuthConfig, Config, Limits
from pigeon.core.address import parse_address
from pigeon.imapd import ImapSessionFactory
from pigeon.net.listener import ConnectionLimits, Listener
from pigeon.net.tls import TlsManager, ensure_self_signed
from pigeon.store.mailbox import MailStore
from tests.unit.listener_thread import ListenerThread

PASSWORD = "correct horse battery staple"
ALICE = "alice@example.test"


class Verifier:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def verify_password(self, address: str, password: str) -> bool:
        return self.users.get(address) == password


def message(n: int, subject: str | None = None, body: str = "hello world") -> bytes:
    subj = subject if subject is not None else f"message {n}"
    return (f"From: Sender <sender@example.org>\r\nTo: alice@example.test\r\nSubject: {subj}\r\n"
            f"Date: Mon, 7 Feb 2022 10:00:00 +0000\r\nMessage-ID: <m{n}@example.org>\r\n\r\n"
            f"{body} {n}\r\n").encode()


def deliver(store: MailStore, data: bytes, folder: str = "INBOX", user: str = ALICE) -> int:
    _, uid = store.account(parse_address(user)).append(folder, data, frozenset(), None)
    return uid


def tls_manager(tmp: Path) -> TlsManager:
    return TlsManager(ensure_self_signed("localhost", tmp))


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ServerThread(ListenerThread):
    """A real IMAP listener on 127.0.0.1 in a background event loop."""

    def __init__(self, store: MailStore, tmp: Path, *, tls: TlsManager | None = None, implicit_tls: bool = False,
                 allow_plaintext_on_loopback: bool = True, max_errors: int = 20,
                 max_message_size: int = 1_000_000) -> None:
        super().__init__()
        self.store = store
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.config = Config(hostname="imap.example.test", data_dir=tmp,
                             limits=dataclasses.replace(Limits(), max_errors=max_errors,
                                                        max_message_size=max_message_size),
                             auth=AuthConfig(allow_plaintext_on_loopback=allow_plaintext_on_loopback))

    def __enter__(self) -> ServerThread:
        super().__enter__()
        return self

    async def make_listener(self) -> Listener:
        clock = SystemClock()
        throttle = AuthThrottle(ThrottleSettings(failure_delay=0.0, max_failure_delay=0.0), clock)
        auth = Authenticator(Verifier({ALICE: PASSWORD, "bob@example.test": PASSWORD}), throttle, clock)
        factory = ImapSessionFactory(self.store, auth, self.tls, lambda: self.config, self.implicit_tls)
        ctx = self.tls.listener_context() if (self.implicit_tls and self.tls is not None) else None
        return Listener("imap", [("127.0.0.1", 0)], factory, lambda: ConnectionLimits(100, 50, 30.0),
                        b"* BYE Too many connections\r\n", tls=ctx)


class RawClient:
    """A line client on a plain socket: send raw octets, read responses up to a tagged line."""

    def __init__(self, port: int, tls: bool = False, timeout: float = 10.0) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            sock = client_tls().wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.line()

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
        """One response line with any literals it announces read in (CRLF kept)."""
        out = bytearray()
        while True:
            part = self.file.readline()
            if not part:
                raise ConnectionError(f"closed after {bytes(out)!r}")
            out += part
            m = re.search(rb"\{(\d+)\}\r\n$", part)
            if m is None:
                return bytes(out)
            out += self.file.read(int(m.group(1)))

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged completion of ``tag``."""
        lines = []
        while True:
            ln = self.line()
            lines.append(ln)
            if ln.startswith(tag + b" "):
                return lines

    def cmd(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def login(self) -> None:
        resp = self.cmd(b"L", f'LOGIN {ALICE} "{PASSWORD}"'.encode())
        assert resp[-1].startswith(b"L OK"), resp
