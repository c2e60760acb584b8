"""The application layer: the composition roots and the process model. Nothing imports it
(but the ``pigeon`` command, to run it).

- ``app.server``: the server's composition root (``pigeon serve``): configuration → objects →
  tasks, signals, stop.
- ``app.runtime``: logging and allocator set-up common to every process.
"""

from pigeon.app.runtime import setup_logging, tune_allocator
from pigeon.app.server import App, DataDirLocked, serve

__all__ = ["App", "DataDirLocked", "serve", "setup_logging", "tune_allocator"]
