"""``[pop3] processes = 2``: a burst of POP3 connections is shared out over the server and its
POP3 worker (``net.listener`` rule 7, the pool's load board), and every session is served."""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from tests.integration.conftest import MakeServer
from tests.integration.harness import free_port, wait_port
from tests.integration.test_imap_processes import sessions_per_pid


def _greeted(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    assert sock.recv(200).startswith(b"+OK")
    return sock


def test_a_burst_of_pop3_connections_is_shared_out_over_the_processes(make_server: MakeServer) -> None:
    port = free_port()
    srv = make_server(listen_toml=f'pop3 = ["127.0.0.1:{port}"]',
                      extra_toml="[auth]\nallow_plaintext_on_loopback = true\n[pop3]\nprocesses = 2\n")
    srv.start()
    srv.wait_log(r"pigeon started", timeout=60)
    wait_port("127.0.0.1", port, proc=srv.proc)
    worker = re.search(r"pop3 worker \d+ ready pid=(\d+)", srv.log)
    assert worker is not None, srv.log[-2000:]
    pids = [srv.pid, int(worker.group(1))]
    time.sleep(1.0)  # the start-up collection of each process (app.runtime rule 5)
    with ThreadPoolExecutor(8) as pool:
        socks = list(pool.map(lambda _: _greeted(port), range(8)))
    try:
        counts = sessions_per_pid(pids, port)
        assert sum(counts.values()) == 8 and min(counts.values()) >= 2, counts  # four each, give or take
    finally:
        for s in socks:
            s.sendall(b"QUIT\r\n")
            s.close()
    srv.stop()
    assert " ERROR " not in srv.log and "Traceback" not in srv.log, srv.log[-3000:]
