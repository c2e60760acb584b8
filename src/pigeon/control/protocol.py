"""The control socket's wire format: one JSON object a line, each way.

Request: ``{"cmd": "queue.list", "args": {...}}``. Response: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "message"}``. Lines are bounded (``MAX_LINE``) on both sides.
The socket is a Unix socket in the data directory with mode 0600: only the owner of the data
directory can talk to it (docs/security.md).
"""

from __future__ import annotations

import json

MAX_LINE = 16 * 1024 * 1024  # a queue listing of ~100k messages fits; anything beyond is refused
SOCKET_NAME = "control.sock"

JSONValue = object


def encode(obj: dict[str, JSONValue]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, JSONValue]:
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("control message must be a JSON object")
    return obj
