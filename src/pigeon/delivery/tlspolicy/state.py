"""Small JSON state files of the transport policies (the MTA-STS cache, the TLS-RPT counts).

Rules:
1. ``save_json(io, path, doc)`` replaces ``path`` atomically: a temporary file beside it is
   written and fsynced, renamed over it, and the directory fsynced (through ``durable``'s IO
   seam, the only place that flushes).
2. ``load_json(path)`` returns the document, or None when the file is missing or not a JSON
   object; a broken file is logged and ignored (it is a cache or counts, never mail).

What can go wrong: ``save_json`` raises OSError (disk full): the callers log it and go on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pigeon.durable.io import REAL, FileIO, write_all

log = logging.getLogger(__name__)

MAX_STATE_BYTES = 16 * 1024 * 1024  # bounded by the callers' own limits; a bigger file is broken


def save_json(path: Path, doc: object, io: FileIO = REAL) -> None:
    """Rule 1."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = io.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(io, fd, json.dumps(doc, separators=(",", ":")).encode())
        io.fsync(fd)
    finally:
        io.close(fd)
    io.rename(tmp, path)
    io.fsync_dir(path.parent)


def load_json(path: Path) -> dict[str, object] | None:
    """Rule 2."""
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            log.warning("tlspolicy: %s is too large; ignored", path)
            return None
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("tlspolicy: %s cannot be read (%s); ignored", path, exc)
        return None
    if not isinstance(doc, dict):
        log.warning("tlspolicy: %s is not a JSON object; ignored", path)
        return None
    return doc
