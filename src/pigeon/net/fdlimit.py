"""The open-file budget: raise the soft limit at start, and check the connection limit fits.

Rules:
1. At start the process raises its soft ``RLIMIT_NOFILE`` to the hard limit (capped at
   ``MAX_NOFILE``): the soft default of 1024 is a relic of ``select``; asyncio uses epoll.
2. ``limits.max_connections`` must fit in what it then has: ``FDS_PER_CONNECTION`` files per
   connection plus ``FD_RESERVE`` for everything else. A configuration that does not fit is
   refused at start with a message that names the key and the limit, instead of failing later
   at ``accept`` for every service at once (``EMFILE``).

What can go wrong: ``FdBudgetError`` (the server refuses to start); ``setrlimit`` refusing is
logged and the current soft limit is used.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# A connection is one socket; a session may hold one more file at a time (a message being
# spooled or read, the account's SQLite index) — two on average is the budget.
FDS_PER_CONNECTION = 2
# The rest of the server: listening sockets, the queue's journal and files, Maildir deliveries
# under way (up to 32 in parallel), SQLite indexes, DNS sockets, worker pipes, logs.
FD_RESERVE = 256
# Nothing here needs more; a hard limit of "unlimited" (or 2^63) is not worth asking for.
MAX_NOFILE = 1 << 20


class FdBudgetError(ValueError):
    """``limits.max_connections`` does not fit in the open-file limit."""


def raise_nofile_limit() -> int:
    """Rule 1: the soft open-file limit raised as far as allowed; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MAX_NOFILE if hard == resource.RLIM_INFINITY else min(hard, MAX_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
    return MAX_NOFILE if soft == resource.RLIM_INFINITY else soft


def files_needed(max_connections: int) -> int:
    return max_connections * FDS_PER_CONNECTION + FD_RESERVE


def check_budget(max_connections: int, nofile: int) -> None:
    """Rule 2: raise ``FdBudgetError`` when ``max_connections`` cannot fit in ``nofile`` files."""
    need = files_needed(max_connections)
    if need > nofile:
        fits = max(0, (nofile - FD_RESERVE) // FDS_PER_CONNECTION)
        raise FdBudgetError(
            f"limits.max_connections = {max_connections} needs about {need} open files, but the "
            f"limit is {nofile}: lower limits.max_connections to {fits} at most, or raise the "
            "limit (ulimit -n, or LimitNOFILE= in the systemd unit)")
