"""How an IMAP session ends, now that the session driver (net.driver) runs it: shutdown while
waiting for a command, in IDLE, or in the middle of AUTHENTICATE; the autologout, also in IDLE
(a read waiting in a task of its own); and STARTTLS dropping what was pipelined in clear."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path

import pytest

from pigeon.imapd import session as imap_session
from pigeon.store.mailbox import MailStore
from tests.unit.imapd.helpers import ALICE, PASSWORD, RawClient, ServerThread, client_tls, deliver, message, tls_manager

SHUTTING_DOWN = b"* BYE [UNAVAILABLE] Server shutting down\r\n"
AUTOLOGOUT = b"* BYE Autologout; idle for too long\r\n"


def stop_soon(server: ServerThread) -> threading.Thread:
    """Stop the server (Listener.stop: every session's shutdown) from another thread."""
    t = threading.Thread(target=server.__exit__, args=(None, None, None))
    t.start()
    return t


def test_shutdown_while_waiting_for_a_command(store: MailStore, tmp_path: Path) -> None:
    server = ServerThread(store, tmp_path).__enter__()
    with RawClient(server.port) as c:
        c.login()
        stopping = stop_soon(server)
        assert c.line() == SHUTTING_DOWN
        stopping.join(10)


def test_shutdown_in_idle(store: MailStore, tmp_path: Path) -> None:
    deliver(store, message(1))
    server = ServerThread(store, tmp_path).__enter__()
    with RawClient(server.port) as c:
        c.login()
        c.cmd(b"s", b"SELECT INBOX")
        c.send(b"i IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
        stopping = stop_soon(server)
        assert c.line() == SHUTTING_DOWN
        stopping.join(10)


def test_shutdown_in_the_middle_of_authenticate(store: MailStore, tmp_path: Path) -> None:
    server = ServerThread(store, tmp_path).__enter__()
    with RawClient(server.port) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        stopping = stop_soon(server)
        assert c.line() == SHUTTING_DOWN  # not NO [SERVERBUG]: the driver's shutdown passes through
        stopping.join(10)


@pytest.fixture
def short_autologout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap_session, "AUTOLOGOUT", 0.1)  # RFC 3501's 30 minutes, for a test


def quick(server: ServerThread, timeout: float) -> ServerThread:
    server.config = dataclasses.replace(server.config,
                                        limits=dataclasses.replace(server.config.limits, session_timeout=timeout))
    return server


@pytest.mark.usefixtures("short_autologout")
def test_autologout(store: MailStore, tmp_path: Path) -> None:
    with quick(ServerThread(store, tmp_path), 0.4) as server, RawClient(server.port) as c:
        c.login()
        assert c.line() == AUTOLOGOUT
        assert c.file.read() == b""


@pytest.mark.usefixtures("short_autologout")
def test_autologout_in_idle(store: MailStore, tmp_path: Path) -> None:
    """The read waits in a task of its own while IDLE polls every IDLE_POLL seconds: its own
    deadline still ends a silent client."""
    with quick(ServerThread(store, tmp_path), 0.4) as server, RawClient(server.port) as c:
        c.login()
        c.cmd(b"s", b"SELECT INBOX")
        c.send(b"i IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
        assert c.line() == AUTOLOGOUT


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_starttls_drops_commands_pipelined_in_clear(store: MailStore, tmp_path: Path) -> None:
    with ServerThread(store, tmp_path, tls=tls_manager(tmp_path / "tls")) as server, RawClient(server.port) as c:
        c.send(b'a STARTTLS\r\nb LOGIN %s "%s"\r\n' % (ALICE.encode(), PASSWORD.encode()))  # CVE-2011-0411 class
        assert c.line() == b"a OK Begin TLS negotiation now\r\n"
        c.file.close()
        c.sock = client_tls().wrap_socket(c.sock)
        c.file = c.sock.makefile("rb")
        c.send(b"c NOOP\r\n")
        assert c.line() == b"c OK NOOP completed\r\n"  # no answer to b: it was never read
        resp = c.cmd(b"d", b"CAPABILITY")
        assert b"STARTTLS" not in resp[0] and resp[-1] == b"d OK CAPABILITY completed\r\n"
