"""Sessions per process of one pool, in memory the processes share: how the processes that
accept from one listening socket (``[imap] processes``, ``[pop3] processes``) spread the
connections by load (``listener`` rule 7).

Rules:
1. A board is a shared memory file (``memfd_create``) of ``slots`` slots, made by the server
   before it starts its workers; a worker inherits its descriptor (``app.master``, like the
   listening sockets). Each slot is (process id, sessions): one writer per slot, the process
   that ``claim``-ed it (the server slot 0, a worker its worker index); a slot whose process
   id is 0 is free and ignored.
2. ``add`` counts this process's sessions up and down (the listener, at accept and at the
   session's end); ``busier`` says whether another live process of the board has fewer.
   The numbers are hints: a read that races a write sees an old count, never a wrong slot.
3. ``release`` frees a slot: the process itself when it ends, the server when it sees a worker
   end (``app.hub``), so that a dead process's count never makes the others decline.
4. ``attach`` maps an inherited descriptor; a descriptor that is not a board of the expected
   size raises ``OSError`` (a wrong number on the command line), before anything is served.
5. ``SharedAccept`` is the accept loop of listening sockets shared with other processes
   (``listener`` rule 7): one connection per wake-up, counted on the board at once; a process
   that is ``busier`` stops reading the socket for ``DECLINE_PAUSE`` and then takes what the
   others left waiting. ``EMFILE`` and the like pause accepting for ``ACCEPT_PAUSE``, logged
   through the caller's (quiet) log, as asyncio's own loop does (``listener`` rule 5).

What can go wrong: ``os.memfd_create`` is Linux-only (elsewhere the server makes no board and
the listeners accept as they come); a process killed without ``release`` keeps its slot until
the server releases it (rule 3).
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import socket
import struct
from collections.abc import Callable, Iterable

_SLOT = struct.Struct("=iI")  # process id (0: free), sessions; 8 octets, aligned
# Rule 5: how long a busier process leaves a new connection to the others before taking it
# itself: a few turns of an idle event loop, well under a client's connect timeout; a stuck
# process costs the others one accept per pause (200 a second).
DECLINE_PAUSE = 0.005
ACCEPT_PAUSE = 1.0  # rule 5, as asyncio: after EMFILE and the like, accepting waits a second
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class LoadBoard:
    """Rules 1-3 for one process: its own ``slot`` of a board of ``slots``."""

    def __init__(self, fd: int, slot: int, slots: int) -> None:
        if not 0 <= slot < slots:
            raise ValueError(f"slot {slot} outside a board of {slots}")
        self.fd = fd
        self.slot = slot
        self.slots = slots
        self._map = mmap.mmap(fd, slots * _SLOT.size)  # rule 4: EINVAL/ENODEV when not one
        self.sessions = 0

    @classmethod
    def create(cls, slots: int, name: str = "pigeon-load") -> LoadBoard:
        """Rule 1: a new board, slot 0 this process's (not claimed yet); the descriptor is
        inheritable only through ``pass_fds``."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, slots * _SLOT.size)
            return cls(fd, 0, slots)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int, slot: int, slots: int) -> LoadBoard:
        """Rule 4."""
        if os.fstat(fd).st_size != slots * _SLOT.size:
            raise OSError(f"descriptor {fd} is not a load board of {slots} slots")
        return cls(fd, slot, slots)

    def claim(self) -> None:
        self.sessions = 0
        self._write(self.slot, os.getpid(), 0)

    def add(self, delta: int) -> None:
        """Rule 2."""
        self.sessions += delta
        self._write(self.slot, os.getpid(), max(self.sessions, 0))

    def busier(self) -> bool:
        """Rule 2: another live process of the board has fewer sessions than this one."""
        mine = self.sessions
        view = self._map
        for slot in range(self.slots):
            if slot == self.slot:
                continue
            pid, sessions = _SLOT.unpack_from(view, slot * _SLOT.size)
            if pid and sessions < mine:
                return True
        return False

    def counts(self) -> dict[int, int]:
        """Slot → sessions of every claimed slot (tests, logs)."""
        out = {}
        for slot in range(self.slots):
            pid, sessions = _SLOT.unpack_from(self._map, slot * _SLOT.size)
            if pid:
                out[slot] = sessions
        return out

    def release(self, slot: int | None = None) -> None:
        """Rule 3: ``slot`` (this process's own when None) is free."""
        self._write(self.slot if slot is None else slot, 0, 0)

    def _write(self, slot: int, pid: int, sessions: int) -> None:
        if not self._map.closed:
            _SLOT.pack_into(self._map, slot * _SLOT.size, pid, sessions)

    def close(self) -> None:
        """Unmap; the descriptor stays the caller's."""
        self._map.close()


class SharedAccept:
    """Rule 5 on the running loop: ``take`` gets each accepted connection (non-blocking)."""

    def __init__(self, board: LoadBoard, take: Callable[[socket.socket], None],
                 log_error: Callable[..., None]) -> None:
        self.board = board
        self._take_conn = take
        self._log_error = log_error
        self._socks: list[socket.socket] = []  # duplicates of the listening sockets: ours to close
        self._paused: set[int] = set()  # descriptors whose reader is off for a pause

    def start(self, listening: Iterable[socket.socket], backlog: int) -> None:
        loop = asyncio.get_running_loop()
        for wrapped in listening:  # asyncio's wrappers have no accept(): a duplicate has
            sock = socket.fromfd(wrapped.fileno(), wrapped.family, wrapped.type)
            sock.setblocking(False)
            sock.listen(backlog)  # one bound by asyncio without serving is not listening yet
            self._socks.append(sock)
            loop.add_reader(sock.fileno(), self._readable, sock)

    def _readable(self, sock: socket.socket) -> None:
        if self.board.busier():
            self._pause(sock, DECLINE_PAUSE)
            return
        self._take(sock)

    def _pause(self, sock: socket.socket, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        self._paused.add(sock.fileno())
        loop.call_later(seconds, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        """After a pause: read the socket again, and take a connection the others left."""
        if sock.fileno() not in self._paused:
            return  # stopped meanwhile
        self._paused.discard(sock.fileno())
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, sock)
        self._take(sock)

    def _take(self, sock: socket.socket) -> None:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another process took it, or the client gave up
        except OSError as exc:
            if exc.errno not in _EXHAUSTED:
                raise
            self._log_error("accept failed: %s; accepting paused for a second (raise the open-file "
                            "limit or lower limits.max_connections)", exc.strerror or exc)
            self._pause(sock, ACCEPT_PAUSE)
            return
        conn.setblocking(False)
        self.board.add(1)
        self._take_conn(conn)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._socks:
            if sock.fileno() not in self._paused:
                loop.remove_reader(sock.fileno())
            self._paused.discard(sock.fileno())
            sock.close()
        self._socks = []
