"""What a configuration needs of the machine, checked before the server starts (and by
``pigeon check-config``): a bad setting refuses to start instead of running half-broken.

The loader (``pigeon.config``) checks what the file says; this module checks what it names:
files, users, the syslog socket, the postmaster. Each problem is one line that names the
setting, the configuration file and the fix.

Rules:
1. ``problems`` lists every problem found (not only the first), in the order of the file.
2. ``[tls] cert``/``key`` must exist, be readable by this process and match each other (the
   key must be the certificate's): a server that starts without TLS on 465/993 is worse than
   one that does not start. The self-signed default (neither set) is not checked here.
3. ``log_file`` must be writable (or creatable in its directory); ``log_syslog`` needs
   ``/dev/log``; ``user``/``group`` must exist (``app.privileges``).
4. ``postmaster`` in a local domain must be a user or an alias (RFC 5321 §4.5.1: mail to
   postmaster must be deliverable); checked once the directory is open
   (``postmaster_problem``). A postmaster in another domain is mail sent out, not checked.
5. ``serve`` calls ``problems`` before it logs anything, as whoever started it (root checks
   readability as root; after the drop, ``app.server`` loads the TLS files again as the
   service user and refuses to start if it cannot).

What can go wrong: nothing raises; every failure is a line in the answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from pigeon.app.privileges import PrivilegeError, resolve
from pigeon.app.runtime import SYSLOG_SOCKET
from pigeon.config import Config
from pigeon.core.address import AddressError, parse_address
from pigeon.directory import Directory, fold
from pigeon.net.tls import TlsError, TlsFiles, server_context


def _writable(path: Path) -> str | None:
    """Why ``path`` cannot be appended to (or created), or None."""
    if path.exists():
        if not path.is_file():
            return "not a regular file"
        return None if os.access(path, os.W_OK) else "not writable"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist and {parent} is not writable"
    return None


def problems(config: Config, syslog_socket: str = SYSLOG_SOCKET) -> list[str]:
    """Rules 1-3."""
    src = config.source
    out: list[str] = []
    if config.user is not None:
        try:
            resolve(config.user, config.group, src)
        except PrivilegeError as exc:
            out.append(str(exc))
    if config.log_file is not None:
        why = _writable(config.log_file)
        if why is not None:
            out.append(f"{src}: log_file: {config.log_file}: {why}")
    if config.log_syslog and not Path(syslog_socket).exists():
        out.append(f"{src}: log_syslog: {syslog_socket} does not exist (no syslog daemon or journald here)")
    if config.tls.cert is not None and config.tls.key is not None:
        try:
            server_context(TlsFiles(config.tls.cert, config.tls.key))
        except TlsError as exc:
            out.append(f"{src}: [tls] cert/key: {exc}")
    if config.data_dir.exists() and not config.data_dir.is_dir():
        out.append(f"{src}: data_dir: {config.data_dir} is not a directory")
    return out


def postmaster_problem(config: Config, directory: Directory) -> str | None:
    """Rule 4."""
    if config.postmaster is None:
        return None
    try:
        address = parse_address(config.postmaster)
    except AddressError as exc:  # the loader checked it; a defence, not a path
        return f"{config.source}: postmaster: {exc}"
    if not directory.is_local_domain(address.domain):
        return None
    if directory.user_exists(address):
        return None
    names = {name for name, _ in directory.aliases()}
    if fold(address) in names or f"@{address.domain.lower()}" in names:
        return None
    return (f"{config.source}: postmaster: {config.postmaster} is neither a user nor an alias "
            f"(add it: pigeon user add {config.postmaster}, or pigeon alias add {config.postmaster} TARGET)")
