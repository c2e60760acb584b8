"""Where a queued message's body is read from: the seam between the queue and its delivery agents.

A delivery agent reads a body through a ``BodySource`` (``queue.api``) and never asks where it
lives: in a ``msg/`` file of the queue, in the memory of the process that just committed it to
its intake journal, or in a journal segment (a message the fast road could not move into the
queue files yet, queue.store rule 12).

Rules:
1. ``open()`` gives a fresh reader from the first octet each time (the caller closes it);
   ``read()`` the whole body. The bytes are the queue's, exactly as delivery sends them (CRLF).
2. A ``MemoryBody`` is only ever made for a small body (``queue.body.MEMORY_BODY``): ``read``
   returns the bytes already held, without a thread hop. A ``FileBody`` or ``SegmentBody``
   reads in a worker thread (``read``) or on the caller's thread (``open``).
3. ``size`` is the body's length in octets, known without reading it.
4. ``in_memory()`` gives the bytes of a ``MemoryBody`` (None for the others): an agent that must
   look at the whole body (the relay agent: 8-bit octets, DKIM signing) does it on the event loop
   for those, and in a worker thread, streaming, for a file or a segment.

What can go wrong: ``OSError`` from ``open``/``read`` of a file or segment that is gone or
unreadable; the delivery agent turns it into a deferred result (never lost mail).
"""

from __future__ import annotations

import asyncio
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pigeon.durable.io import FileIO
from pigeon.durable.journal import read_at


class MemoryBody:
    """Rule 2: a journal commit's body, still in memory (a plain class: one is made per
    message on the fast road, and a frozen dataclass's ``__init__`` costs more)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    async def read(self) -> bytes:
        return self.data

    def in_memory(self) -> bytes | None:
        return self.data


@dataclass(frozen=True, slots=True)
class FileBody:
    """A body in the queue files (``msg/<id>``)."""

    path: Path

    @property
    def size(self) -> int:
        return os.stat(self.path).st_size

    def open(self) -> BinaryIO:
        # Unbuffered: the readers copy in large chunks themselves (and no isatty() probe).
        return open(self.path, "rb", buffering=0)  # noqa: SIM115 - the caller closes it

    async def read(self) -> bytes:
        return await asyncio.to_thread(self.path.read_bytes)

    def in_memory(self) -> bytes | None:
        return None


@dataclass(frozen=True, slots=True)
class SegmentBody:
    """A body live in an intake journal, read back from its segment."""

    path: Path
    offset: int
    length: int
    io: FileIO

    @property
    def size(self) -> int:
        return self.length

    def open(self) -> BinaryIO:
        return io.BytesIO(read_at(self.path, self.offset, self.length, self.io))

    async def read(self) -> bytes:
        return await asyncio.to_thread(read_at, self.path, self.offset, self.length, self.io)

    def in_memory(self) -> bytes | None:
        return None
