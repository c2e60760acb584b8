"""Telling systemd how the server is doing (``Type=notify``), by the few lines of sd_notify(3).

Rules:
1. A notice is one datagram to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (an ``@`` first
   means Linux's abstract namespace). Without the variable (not started by systemd) nothing is
   sent; that is not an error.
2. The server sends ``READY=1`` once every listener listens and the workers are ready,
   ``RELOADING=1`` (with ``MONOTONIC_USEC``, which systemd 253's ``Type=notify-reload`` asks for)
   when SIGHUP starts a reload and ``READY=1`` when it is done, and ``STOPPING=1`` when it
   starts to stop. ``STATUS=`` carries a line for ``systemctl status``.
3. A notice that cannot be sent is logged and dropped: systemd's own timeouts cover a server
   that never said it was ready; the server never stops for it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Rule 1: send ``state`` (``KEY=value`` lines); True when a notice was sent."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        log.error("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:  # rule 3
        log.error("cannot notify systemd (%s): %s", state.splitlines()[0], exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")


def reloading() -> bool:
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration")


def stopping() -> bool:
    return notify("STOPPING=1\nSTATUS=stopping: finishing sessions and deliveries")
