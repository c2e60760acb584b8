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

What can go wrong: ``os.memfd_create`` is Linux-only (elsewhere the server makes no board and
the listeners accept as they come); a process killed without ``release`` keeps its slot until
the server releases it (rule 3).
"""

from __future__ import annotations

import mmap
import os
import struct

_SLOT = struct.Struct("=iI")  # process id (0: free), sessions; 8 octets, aligned


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
