"""A real ``net.listener.Listener`` on 127.0.0.1 in a background event loop, for tests that
drive a session with a blocking client (imaplib, poplib, a raw socket).

Subclasses build the listener in ``make_listener`` (inside the loop); the base starts the
thread, waits until the port is bound, and on exit stops the listener and lets every task it
left (a TLS close still under way) finish instead of cancelling it.
"""

from __future__ import annotations

import asyncio
import threading

from pigeon.net.listener import Listener


class ListenerThread:
    def __init__(self) -> None:
        self.port = 0
        self.listener: Listener | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    async def make_listener(self) -> Listener:
        raise NotImplementedError

    def __enter__(self) -> ListenerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server did not start")
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced to the test in __enter__
            self.error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.listener = await self.make_listener()
        await self.listener.start()
        self.port = self.listener.bound[0][1]
        self._ready.set()
        await self._stop.wait()
        await self.listener.stop(grace=5.0)
        # Listener._accept forgets a session before its stream is closed, so stop() can return
        # while a TLS close is still under way; let those finish instead of cancelling them.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5.0)
