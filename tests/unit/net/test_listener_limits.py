"""net.listener: connection limits shared by every service, counted before any TLS handshake;
the handshake's own timeout; quiet accept errors; the open-file budget (net.fdlimit)."""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pigeon.net.fdlimit import FD_RESERVE, FDS_PER_CONNECTION, FdBudgetError, check_budget, raise_nofile_limit
from pigeon.net.listener import ConnectionGate, ConnectionLimits, Listener, QuietLog, Stream
from pigeon.net.tls import ensure_self_signed, server_context


class _Echo:
    """A session that answers one greeting and then waits for the client to go away."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def run(self) -> None:
        await self.stream.write(b"hello\r\n")
        while await self.stream.read():
            pass

    def shutdown(self) -> None:
        pass


def _limits(total: int, per_ip: int) -> ConnectionLimits:
    return ConnectionLimits(total, per_ip, session_timeout=30)


async def _listener(service: str, gate: ConnectionGate, limits: ConnectionLimits,
                    tls: ssl.SSLContext | None = None, handshake_timeout: float = 10.0) -> tuple[Listener, int]:
    lst = Listener(service, [("127.0.0.1", 0)], _Echo, lambda: limits, b"busy\r\n", tls=tls, gate=gate,
                   handshake_timeout=handshake_timeout)
    await lst.start()
    return lst, lst.bound[0][1]


async def _greeting(port: int) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await asyncio.wait_for(reader.read(100), 5), writer


async def _wait_total(gate: ConnectionGate, total: int) -> None:
    for _ in range(200):
        if gate.total == total:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gate.total stayed {gate.total}, expected {total}")


def _two_services(total: int, per_ip: int, steps: list[tuple[int, bytes]], then_one_leaves: bool) -> None:
    """Connect to service 0 or 1 in ``steps`` order, each expecting its greeting; then, if
    asked, close the first connection and check there is room for exactly one more."""

    async def main() -> None:
        gate = ConnectionGate()
        limits = _limits(total, per_ip)
        a, pa = await _listener("smtp", gate, limits)
        b, pb = await _listener("imap", gate, limits)
        ports = (pa, pb)
        writers = []
        try:
            for service, expect in steps:
                data, w = await _greeting(ports[service])
                writers.append(w)
                assert data == expect
            if then_one_leaves:
                writers[0].close()
                await _wait_total(gate, gate.total - 1)
                for service, expect in ((1, b"hello\r\n"), (0, b"busy\r\n")):
                    data, w = await _greeting(ports[service])
                    writers.append(w)
                    assert data == expect
        finally:
            for w in writers:
                w.close()
            await a.stop(1)
            await b.stop(1)
        assert gate.total == 0 and not gate.per_ip

    asyncio.run(main())


HELLO, BUSY = b"hello\r\n", b"busy\r\n"


def test_the_per_ip_limit_holds_over_all_services_together() -> None:
    # three in all from one address, whichever the service; the fourth is one too many
    _two_services(100, 3, [(0, HELLO), (1, HELLO), (0, HELLO), (1, BUSY), (0, BUSY)], then_one_leaves=True)


def test_the_total_limit_holds_over_all_services_together() -> None:
    _two_services(2, 2, [(0, HELLO), (1, HELLO), (1, BUSY), (0, BUSY)], then_one_leaves=False)


def test_silent_connections_to_an_implicit_tls_port_are_counted_before_the_handshake(tmp_path: Path) -> None:
    """Rule 2 and 3: a TCP connection that never starts its handshake takes a slot at once (so
    one address cannot hold thousands of them), gets nothing in clear when refused, and is
    closed when the handshake timeout passes."""

    async def main() -> None:
        tls = server_context(ensure_self_signed("localhost", tmp_path))
        gate = ConnectionGate()
        limits = _limits(100, 2)
        imaps, port = await _listener("imaps", gate, limits, tls=tls, handshake_timeout=0.5)
        smtp, sport = await _listener("smtp", gate, limits)
        try:
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await _wait_total(gate, 2)  # counted without a single octet of TLS
            data, w = await _greeting(sport)  # another service: the address is at its limit
            assert data == b"busy\r\n"
            w.close()
            r3, w3 = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(r3.read(100), 5) == b""  # refused: closed, no clear text
            w3.close()
            for reader, _ in silent:  # the handshake timeout closes the silent ones
                assert await asyncio.wait_for(reader.read(100), 5) == b""
            await _wait_total(gate, 0)
            # and a real TLS client is served
            client = ssl.create_default_context()
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
            r4, w4 = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            assert await asyncio.wait_for(r4.read(100), 5) == b"hello\r\n"
            w4.close()
            for _, w in silent:
                w.close()
        finally:
            await imaps.stop(1)
            await smtp.stop(1)

    asyncio.run(main())


def test_quiet_log_says_a_repeated_warning_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    quiet = QuietLog(interval=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            quiet.log("accept failed: %s", "Too many open files")
    assert len(caplog.records) == 1
    quiet._next = 0.0  # the interval has passed
    with caplog.at_level(logging.WARNING):
        quiet.log("accept failed: %s", "Too many open files")
    assert len(caplog.records) == 2
    assert "and 999 more" in caplog.records[1].getMessage()


def test_accept_failing_with_emfile_logs_once_per_interval_not_a_flood(tmp_path: Path) -> None:
    """Rule 5, in a process of its own with a tiny open-file limit: every descriptor is used
    up, clients keep connecting for 2.5 s, and the log gets one line, not one per attempt."""
    script = textwrap.dedent("""
        import asyncio, logging, os, resource, socket, sys
        from pigeon.net.listener import ConnectionGate, ConnectionLimits, Listener, quiet_accept_errors
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

        class S:
            def __init__(self, stream): self.stream = stream
            async def run(self):
                while await self.stream.read(): pass
            def shutdown(self): pass

        async def main():
            quiet_accept_errors(asyncio.get_running_loop())
            lst = Listener("smtp", [("127.0.0.1", 0)], S, lambda: ConnectionLimits(1000, 1000, 30), b"",
                           gate=ConnectionGate())
            await lst.start()
            port = lst.bound[0][1]
            hog = []
            try:
                while True:
                    hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            for fd in hog[-8:]:  # room for the clients' sockets, none for the server's accept
                os.close(fd)
            clients = []
            for _ in range(5):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                clients.append(s)
            await asyncio.sleep(2.5)
            print("done", file=sys.stderr)
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src"), "PATH": "/usr/bin:/bin"})
    assert "done" in out.stderr, out.stderr
    failures = [line for line in out.stderr.splitlines() if "accept failed" in line]
    assert len(failures) == 1, out.stderr  # asyncio retried every second: 3 attempts, one line
    assert "Traceback" not in out.stderr


def test_raise_nofile_limit_takes_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = raise_nofile_limit()
        assert got == min(hard, 1 << 20)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_connection_limit_that_does_not_fit_is_refused_with_the_key_named() -> None:
    check_budget(1000, 1000 * FDS_PER_CONNECTION + FD_RESERVE)  # fits exactly
    with pytest.raises(FdBudgetError) as err:
        check_budget(1000, 1024)
    text = str(err.value)
    assert "limits.max_connections = 1000" in text
    assert f"{(1024 - FD_RESERVE) // FDS_PER_CONNECTION} at most" in text
