"""The application layer: the composition roots and the process model. Nothing imports it
(but the ``pigeon`` command, to run it).

- ``app.server``: the server's composition root (``pigeon serve``): configuration → objects →
  tasks, signals, stop.
- ``app.runtime``: logging and allocator set-up common to every process.
"""

from typing import TYPE_CHECKING

from pigeon.app.runtime import setup_logging, tune_allocator

if TYPE_CHECKING:
    from pigeon.app.server import App, DataDirLocked, serve

__all__ = ["App", "DataDirLocked", "serve", "setup_logging", "tune_allocator"]


def __getattr__(name: str) -> object:
    """``pigeon.app.serve`` and the rest of the server, imported when first asked for: a worker
    process (``app.worker``) then loads only what its services need (not IMAP, POP3, qmgr…)."""
    if name in ("App", "DataDirLocked", "serve"):
        from pigeon.app import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
