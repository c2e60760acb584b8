"""STLS (RFC 2595) and implicit TLS (pop3s) over a real loopback socket, with real OpenSSL."""

from __future__ import annotations

import poplib
import shutil
from pathlib import Path

import pytest

from tests.unit.pop3d.fakes import PASSWORD, FakeStore, RawClient, ServerThread, client_tls, message, tls_manager

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

ALICE = "alice@example.test"


def store_with(n: int) -> FakeStore:
    store = FakeStore()
    for i in range(1, n + 1):
        store.folder(ALICE).deliver(message(i))
    return store


def test_stls_then_login_when_plaintext_is_refused(tmp_path: Path) -> None:
    with ServerThread(store_with(2), tls=tls_manager(tmp_path), allow_plaintext_on_loopback=False) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        try:
            caps = client.capa()
            assert "STLS" in caps and "USER" not in caps
            client.stls(client_tls())
            caps = client.capa()
            assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN", "LOGIN"]
            client.user(ALICE)
            client.pass_(PASSWORD)
            assert client.stat()[0] == 2
            _, lines, _ = client.retr(2)
            assert b"\r\n".join(lines) + b"\r\n" == message(2)
        finally:
            client.quit()


def test_stls_twice_is_refused(tmp_path: Path) -> None:
    with ServerThread(store_with(0), tls=tls_manager(tmp_path)) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        try:
            client.stls(client_tls())
            with pytest.raises(poplib.error_proto, match="Already using TLS"):
                client._shortcmd("STLS")
        finally:
            client.quit()


def test_commands_pipelined_before_the_handshake_are_discarded(tmp_path: Path) -> None:
    with ServerThread(store_with(1), tls=tls_manager(tmp_path)) as server:
        with RawClient(server.port) as raw:
            raw.line()
            # CVE-2011-0411 class: what follows STLS in the same packet must not be executed
            raw.send(f"STLS\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\n".encode())
            assert raw.line() == b"+OK Begin TLS negotiation\r\n"
            tls = client_tls().wrap_socket(raw.sock)
            try:
                tls.sendall(b"STAT\r\n")
                reply = tls.recv(1000)
                assert reply == b"-ERR Command not valid in this state\r\n"
                tls.sendall(b"QUIT\r\n")
                assert tls.recv(1000).startswith(b"+OK")
            finally:
                tls.close()


def test_implicit_tls(tmp_path: Path) -> None:
    with ServerThread(store_with(1), tls=tls_manager(tmp_path), implicit_tls=True,
                      allow_plaintext_on_loopback=False) as server:
        client = poplib.POP3_SSL("127.0.0.1", server.port, context=client_tls(), timeout=10)
        try:
            assert client.getwelcome().startswith(b"+OK")
            caps = client.capa()
            assert "STLS" not in caps and "USER" in caps
            client.user(ALICE)
            client.pass_(PASSWORD)
            assert client.uidl()[1] == [b"1 1234.1"]
        finally:
            client.quit()


def test_plain_client_on_implicit_tls_port_gets_nothing(tmp_path: Path) -> None:
    with ServerThread(store_with(0), tls=tls_manager(tmp_path), implicit_tls=True) as server:
        with RawClient(server.port) as raw:
            raw.send(b"USER alice\r\n")  # not a TLS ClientHello: the handshake fails, no greeting
            assert raw.closed()
        # the server goes on serving TLS clients
        client = poplib.POP3_SSL("127.0.0.1", server.port, context=client_tls(), timeout=10)
        client.quit()
