"""net.listener rule 7 and net.loadboard: processes that accept from one listening socket
share out the connections by load, and a connection left by a busy or stuck process is still
taken. Two ``Listener`` objects with their own slot of one board stand for two processes (the
board is shared memory: the same whether the mappings are in one process or two)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess

import pytest

from pigeon.net.listener import BACKLOG, ConnectionGate, ConnectionLimits, Listener
from pigeon.net.loadboard import DECLINE_PAUSE, LoadBoard
from tests.unit.net.test_listener_limits import _Echo as _Hold  # greets, holds until the client goes


def _limits() -> ConnectionLimits:
    return ConnectionLimits(1000, 1000, session_timeout=30)


async def _greeting(port: int) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await asyncio.wait_for(reader.read(100), 5), writer


def _listen_backlog(port: int) -> int:
    """The kernel's accept-queue size of the socket listening on ``port`` (``ss``'s Send-Q)."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2])


def _shared_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_the_board_is_shared_memory_with_one_slot_per_process() -> None:
    server = LoadBoard.create(3)
    worker = LoadBoard.attach(server.fd, 2, 3)
    try:
        assert server.counts() == {} and not server.busier()
        server.claim(), worker.claim()
        server.add(1)
        assert server.counts() == {0: 1, 2: 0}
        assert server.busier() and not worker.busier()  # rule 2
        worker.add(2)
        assert worker.busier() and not server.busier()
        server.release(2)  # rule 3: the server frees a worker that ended
        assert server.counts() == {0: 1} and not server.busier()
        with pytest.raises(OSError):
            LoadBoard.attach(server.fd, 1, 4)  # rule 4: not a board of that size
    finally:
        worker.close(), server.close()
        os.close(server.fd)


def test_a_burst_of_clients_is_shared_out_between_two_processes() -> None:
    """Rule 7: twelve clients connecting at once land six and six (one either way)."""

    async def go() -> None:
        sock = _shared_socket()
        board = LoadBoard.create(2)
        other = LoadBoard.attach(board.fd, 1, 2)
        a = Listener("imap", [], _Hold, _limits, b"busy\r\n", gate=ConnectionGate(),
                     sockets=[sock], board=board)
        b = Listener("imap", [], _Hold, _limits, b"busy\r\n", gate=ConnectionGate(),
                     sockets=[socket.fromfd(sock.fileno(), sock.family, sock.type)], board=other)
        await a.start(), await b.start()
        port = sock.getsockname()[1]
        try:
            assert _listen_backlog(port) == BACKLOG
            clients = await asyncio.gather(*(_greeting(port) for _ in range(12)))
            assert [g for g, _ in clients] == [b"hello\r\n"] * 12
            counts = board.counts()
            assert sum(counts.values()) == 12 and abs(counts[0] - counts[1]) <= 1, counts
            for _, w in clients:
                w.close()
            for _ in range(200):  # the sessions end: the counts go back down
                if board.counts() == {0: 0, 1: 0}:
                    break
                await asyncio.sleep(0.01)
            assert board.counts() == {0: 0, 1: 0}
        finally:
            await a.stop(grace=1), await b.stop(grace=1)
            board.close(), other.close()
            os.close(board.fd)

    asyncio.run(go())


def test_a_connection_another_process_leaves_waiting_is_taken_after_the_pause() -> None:
    """Rule 7: slot 1 is claimed by a process that never accepts (stuck); this one, busier,
    still serves every client, each within about DECLINE_PAUSE; and a listener bound here
    (not inherited) listens with the full BACKLOG."""

    async def go() -> None:
        board = LoadBoard.create(2)
        stuck = LoadBoard.attach(board.fd, 1, 2)
        stuck.claim()
        lst = Listener("imap", [("127.0.0.1", 0)], _Hold, _limits, b"busy\r\n", gate=ConnectionGate(),
                       board=board)
        await lst.start()
        port = lst.bound[0][1]
        try:
            assert _listen_backlog(port) == BACKLOG
            loop = asyncio.get_running_loop()
            started = loop.time()
            clients = [await _greeting(port) for _ in range(5)]
            assert [g for g, _ in clients] == [b"hello\r\n"] * 5
            assert board.counts() == {0: 5, 1: 0}
            assert loop.time() - started < 5 * (DECLINE_PAUSE + 0.2)
            for _, w in clients:
                w.close()
        finally:
            await lst.stop(grace=1)
            board.close(), stuck.close()
            os.close(board.fd)

    asyncio.run(go())
