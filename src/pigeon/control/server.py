"""The running server's admin socket (``data_dir/control.sock``).

Rules:
1. Only the data directory's owner can connect (socket mode 0600).
2. Each request line runs one registered handler; an unknown command or a handler error is an
   ``{"ok": false}`` answer with a message, never a crash of the server.
3. A stale socket file from a killed server is removed at start (the app holds the data
   directory lock, so no other server can be using it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from pigeon.control.protocol import MAX_LINE, JSONValue, decode, encode

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, JSONValue]], Awaitable[JSONValue]]


class ControlServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handlers: dict[str, Handler] = {}
        self.server: asyncio.Server | None = None

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(encode({"ok": False, "error": "request too long"}))
                    break
                if not line:
                    break
                writer.write(encode(await self._dispatch(line)))
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("control connection: %s", exc)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

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
