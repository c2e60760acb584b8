"""Idle SMTP client connections kept for the next message to the same host (Postfix's scache).

Rules:
1. After a transaction that ended cleanly, the relay puts the connection here instead of
   sending QUIT. The next transaction to the same (host, address, port, settings) takes it,
   checks it with ``RSET`` (RFC 5321 §4.1.1.5; in the same pipelined group as MAIL when the peer
   offers PIPELINING, ``relay_session`` Rule 16) and, if that fails, opens a new one.
2. A connection stays idle at most ``idle_time`` seconds (Postfix
   ``smtp_connection_cache_time_limit`` = 2 s), then it is closed with QUIT. It carries at most
   ``max_uses`` transactions (Postfix ``smtp_connection_reuse_count_limit`` is unlimited; 100
   bounds the damage of a peer that degrades over a long session) and lives at most
   ``max_age`` seconds (Postfix ``smtp_connection_reuse_time_limit`` = 300 s).
3. At most ``max_idle`` connections are kept; past that, the oldest is closed. ``close_all``
   (at shutdown) sends QUIT to every idle one.
4. A connection is in the cache or in use by one transaction, never both.

What can go wrong: closing errors are logged at debug level and ignored (the peer is gone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

IDLE_TIME = 2.0  # Postfix smtp_connection_cache_time_limit
MAX_USES = 100
MAX_AGE = 300.0  # Postfix smtp_connection_reuse_time_limit
MAX_IDLE = 100  # idle connections kept in total: well under the relay's concurrency limit

T = TypeVar("T")


@dataclass
class Cached(Generic[T]):
    conn: T
    uses: int
    born: float
    closer: Callable[[], Awaitable[None]]
    timer: asyncio.TimerHandle | None = field(default=None)


class ConnectionCache(Generic[T]):
    def __init__(self, idle_time: float = IDLE_TIME, max_uses: int = MAX_USES, max_age: float = MAX_AGE,
                 max_idle: int = MAX_IDLE) -> None:
        self.idle_time = idle_time
        self.max_uses = max_uses
        self.max_age = max_age
        self.max_idle = max_idle
        self._idle: OrderedDict[tuple[Hashable, int], Cached[T]] = OrderedDict()
        self._serial = 0
        self._closing: set[asyncio.Task[None]] = set()
        self.reused = 0  # transactions that ran on a cached connection (for tests and stats)

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, key: Hashable) -> Cached[T] | None:
        """An idle connection for ``key`` (removed from the cache), or None (Rule 4)."""
        for k in list(self._idle):
            if k[0] == key:
                entry = self._idle.pop(k)
                if entry.timer is not None:
                    entry.timer.cancel()
                self.reused += 1
                return entry
        return None

    def reusable(self, uses: int, born: float) -> bool:
        return uses < self.max_uses and time.monotonic() - born < self.max_age

    def put(self, key: Hashable, entry: Cached[T]) -> None:
        """Keep ``entry`` for ``idle_time`` seconds (Rules 2, 3)."""
        self._serial += 1
        k = (key, self._serial)
        self._idle[k] = entry
        entry.timer = asyncio.get_running_loop().call_later(self.idle_time, self._expire, k)
        while len(self._idle) > self.max_idle:
            _, oldest = self._idle.popitem(last=False)
            self._close(oldest)

    def _expire(self, k: tuple[Hashable, int]) -> None:
        entry = self._idle.pop(k, None)
        if entry is not None:
            self._close(entry)

    def _close(self, entry: Cached[T]) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run_close(entry))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _run_close(entry: Cached[T]) -> None:
        try:
            await entry.closer()
        except Exception as exc:  # the peer is gone; nothing to do about it
            log.debug("relay: closing a cached connection: %s", exc)

    async def close_all(self) -> None:
        """Shutdown: QUIT every idle connection and wait for the closes (Rule 3)."""
        while self._idle:
            _, entry = self._idle.popitem(last=False)
            self._close(entry)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
