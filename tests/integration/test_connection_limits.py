"""Connection limits of the real server: one count over every service, taken before any TLS
handshake; a line trickled octet by octet is cut off; a limit that cannot fit in the open-file
limit refuses to start (issue #14, point 2 and the per-line deadline of point 3)."""

from __future__ import annotations

import socket
import ssl
import time
import pytest

from tests.integration.conftest import MakeServer
from tests.integration.harness import free_port

pytestmark = pytest.mark.integration


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def _first(sock: socket.socket) -> bytes:
    try:
        return sock.recv(200)
    except (ConnectionResetError, TimeoutError):
        return b""


def test_per_ip_limit_spans_smtp_imap_pop3_and_the_tls_ports(make_server: MakeServer) -> None:
    ports = {name: free_port() for name in ("imap", "imaps", "pop3", "submissions")}
    listen = "".join(f'{name} = ["127.0.0.1:{port}"]\n' for name, port in ports.items())
    srv = make_server(listen_toml=listen, limits_toml="max_connections_per_ip = 4\n")
    srv.start()
    time.sleep(0.5)  # the start-up probes of every port (harness.wait_port) are gone
    held: list[socket.socket] = []
    try:
        # Four silent connections: two TLS ports that never see a ClientHello, SMTP, IMAP.
        for port in (ports["imaps"], ports["submissions"]):
            held.append(_connect(port))
        smtp = _connect(srv.smtp_port)
        assert _first(smtp).startswith(b"220 ")
        held.append(smtp)
        imap = _connect(ports["imap"])
        assert _first(imap).startswith(b"* OK")
        held.append(imap)
        time.sleep(0.2)
        # The fifth, whatever the service, is refused with that service's answer.
        for port, answer in ((srv.smtp_port, b"421 4.7.0"), (ports["pop3"], b"-ERR"), (ports["imap"], b"* BYE")):
            extra = _connect(port)
            assert _first(extra).startswith(answer)
            extra.close()
        extra = _connect(ports["imaps"])  # nothing in clear on a TLS port: just closed
        assert _first(extra) == b""
        extra.close()
        # One leaves: a real TLS client on 993 now gets in.
        held.pop(0).close()
        time.sleep(0.3)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(_connect(ports["imaps"])) as tls:
            assert tls.recv(200).startswith(b"* OK")
    finally:
        for s in held:
            s.close()
    assert "Traceback" not in srv.log


def test_a_command_trickled_one_octet_at_a_time_is_cut_off(make_server: MakeServer) -> None:
    srv = make_server(limits_toml="session_timeout = 5\nline_timeout = 1.5\n")
    srv.start()
    s = _connect(srv.smtp_port)
    try:
        assert _first(s).startswith(b"220 ")
        t0 = time.monotonic()
        answer = b""
        for octet in b"EHLO slow.example.test and more and more":  # one octet every 0.25 s
            try:
                s.sendall(bytes([octet]))
            except OSError:
                break
            time.sleep(0.25)
            s.settimeout(0.01)
            try:
                answer += s.recv(200)
            except (TimeoutError, BlockingIOError):
                pass
            if answer:
                break
        s.settimeout(5)
        answer += _first(s)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert answer.startswith(b"421 4.4.2"), answer
    assert 1.4 <= elapsed < 4, elapsed  # the line's 1.5 s, though every read came within 0.25 s


def test_a_connection_limit_beyond_the_open_file_limit_refuses_to_start(make_server: MakeServer) -> None:
    srv = make_server(limits_toml="max_connections = 100000000\nmax_connections_per_ip = 50\n")
    res = srv.cli("serve", check=False)
    assert res.returncode == 1
    assert "limits.max_connections = 100000000 needs about" in res.stderr
    assert "Traceback" not in res.stderr
