"""The running server's admin socket (``data_dir/control.sock``).

Rules:
1. Only the data directory's owner can connect (socket mode 0600, ``net.local``).
2. Each request line runs one registered handler; an unknown command, a request that is not a
   JSON object, or a handler error is an ``{"ok": false}`` answer with a message, never a
   crash of the server. A request line longer than ``protocol.MAX_LINE`` is answered
   ``{"ok": false, "error": "request too long"}`` and the connection is closed.
3. A stale socket file from a killed server is removed at start (the app holds the data
   directory lock, so no other server can be using it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from pigeon.control.protocol import MAX_LINE, JSONValue, decode, encode
from pigeon.net.local import LineServer

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, JSONValue]], Awaitable[JSONValue]]
TOO_LONG = encode({"ok": False, "error": "request too long"})


class ControlServer:
    def __init__(self, path: Path, max_line: int = MAX_LINE) -> None:
        self.path = path
        self.handlers: dict[str, Handler] = {}
        self._lines = LineServer(path, self._answer, max_line, TOO_LONG)

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    async def start(self) -> None:
        await self._lines.start()

    async def stop(self) -> None:
        await self._lines.stop()

    async def _answer(self, line: bytes) -> bytes:
        return encode(await self._dispatch(line))

    async def _dispatch(self, line: bytes) -> dict[str, JSONValue]:
        try:
            req = decode(line)
        except (ValueError, json.JSONDecodeError) as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        cmd = req.get("cmd")
        args = req.get("args") or {}
        handler = self.handlers.get(str(cmd))
        if handler is None or not isinstance(args, dict):
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        try:
            return {"ok": True, "result": await handler(args)}
        except (KeyError, ValueError, FileNotFoundError, LookupError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        except Exception as exc:
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error: {exc}"}
