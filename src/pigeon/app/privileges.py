"""Who a Pigeon process runs as: the listening sockets bound as root, then the service user.

A mail server must bind ports below 1024 (25, 465, 587, 993, 995), which takes root (or the
capability ``CAP_NET_BIND_SERVICE``), and must serve nothing as root. ``pigeon serve`` started
as root with ``user`` set binds every listener first, then becomes that user before it opens
the data directory or accepts a connection; the worker processes it starts afterwards inherit
who it is.

Rules:
1. ``resolve`` turns ``user`` and ``group`` into ids through the system's user database
   (``pwd``/``grp``, so NSS users work too): the group defaults to the user's own, and the
   supplementary groups are the user's (``getgrouplist``), as ``login`` would give them.
2. ``drop`` changes identity in the only safe order: supplementary groups (``setgroups``), then
   the group (``setresgid``: real, effective and saved), then the user (``setresuid``) — after
   ``setuid`` the process could no longer change its groups. It then checks that root cannot be
   regained (``setuid(0)`` and ``setgid(0)`` must fail) and that every id is the target's; if
   not, it raises ``PrivilegeError`` and the caller must exit, never serve.
3. ``bind_all`` opens the listening sockets of every configured service as ``asyncio`` would
   (``SO_REUSEADDR``, ``IPV6_V6ONLY`` for IPv6, the same backlog): the listeners serve them
   as they are, after the drop (``net.listener``, ``sockets=``).
4. ``prepare_data_dir`` creates a missing data directory (mode 0700) and gives it, and a
   ``log_file``, to the service user, so that the dropped process can use them. It does not walk
   the tree: ``check_tree`` finds files that another user owns (a command once run as root by
   hand) and names them, so that the start refuses with the fix instead of a traceback later.
5. ``cli_identity``: a command line tool run as root acts as the service user: the configured
   ``user``, else the owner of the data directory when that is not root, so that every file it
   creates belongs to whom the server runs as (``admin.cli``).

What can go wrong: an unknown user or group (``PrivilegeError`` naming the key and the
configuration file), a port in use or not permitted (``OSError`` from ``bind_all``), a data
directory owned by somebody else (``PrivilegeError`` naming the path and the ``chown`` to run).
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
from dataclasses import dataclass
from pathlib import Path

from pigeon.config import Config

# asyncio.start_server's backlog as the listeners use it (net.listener): the kernel caps it at
# net.core.somaxconn.
BACKLOG = 1024
# check_tree stops after this many entries owned by someone else: enough to name the problem.
MAX_REPORTED = 5
# check_tree looks this deep: where the tools create files (directory.sqlite3, queue/<state>/,
# maildrop/, mail/<domain>/); a whole Maildir tree could hold millions of files.
CHECK_DEPTH = 3


class PrivilegeError(Exception):
    """The process cannot become, or did not fully become, the configured user."""


@dataclass(frozen=True, slots=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, the primary one included

    def __str__(self) -> str:
        return f"{self.name} (uid {self.uid}, gid {self.gid})"


def resolve(user: str, group: str | None, source: str = "the configuration") -> ServiceUser:
    """Rule 1."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"{source}: user: no such user {user!r} (create it: "
                             f"useradd --system --home-dir /var/lib/pigeon --shell /usr/sbin/nologin {user})") from None
    gid = pw.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"{source}: group: no such group {group!r}") from None
    groups = tuple(sorted(set(os.getgrouplist(user, gid))))
    return ServiceUser(user, pw.pw_uid, gid, groups)


def drop(target: ServiceUser) -> None:
    """Rule 2. Raises ``PrivilegeError`` if the process is not exactly ``target`` afterwards."""
    try:
        os.setgroups(list(target.groups))
        os.setresgid(target.gid, target.gid, target.gid)
        os.setresuid(target.uid, target.uid, target.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot become {target}: {exc.strerror or exc}") from None
    if target.uid == 0:
        return  # nothing was dropped (the data directory of a root installation)
    for regain in (os.setuid, os.setgid, os.seteuid):
        try:
            regain(0)
        except PermissionError:
            continue
        raise PrivilegeError(f"root could be regained after becoming {target} ({regain.__name__}(0) worked)")
    if (os.getresuid() != (target.uid,) * 3 or os.getresgid() != (target.gid,) * 3
            or set(os.getgroups()) - set(target.groups)):
        raise PrivilegeError(f"the process is not {target} after the drop")


def bind_all(endpoints: dict[str, list[tuple[str, int]]]) -> dict[str, list[int]]:
    """Rule 3: every endpoint of every service, bound and listening, as descriptors (the
    listeners adopt them: ``net.listener.adopt_listening_sockets``); on a failure the sockets
    already opened are closed and the ``OSError`` (naming the address) is raised."""
    out: dict[str, list[int]] = {}
    try:
        for service, addresses in endpoints.items():
            for host, port in addresses:
                out.setdefault(service, []).extend(s.detach() for s in _bind(host, port))
    except OSError:
        for fds in out.values():
            for fd in fds:
                os.close(fd)
        raise
    return out


def _bind(host: str, port: int) -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    for fam, kind, proto, _, addr in dict.fromkeys((i[0], i[1], i[2], i[3], i[4]) for i in infos):
        sock = socket.socket(fam, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            for s in socks:
                s.close()
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from None
        socks.append(sock)
    return socks


def _give(path: Path, target: ServiceUser) -> None:
    st = path.stat()
    if (st.st_uid, st.st_gid) != (target.uid, target.gid):
        os.chown(path, target.uid, target.gid)


def prepare_data_dir(config: Config, target: ServiceUser) -> None:
    """Rule 4 (run as root, before ``drop``)."""
    data = config.data_dir
    if not data.exists():
        data.mkdir(parents=True, mode=0o700)
    _give(data, target)
    if config.log_file is not None and config.log_file.exists():
        _give(config.log_file, target)


def check_tree(data_dir: Path, target: ServiceUser, depth: int = CHECK_DEPTH) -> None:
    """Rule 4: raise ``PrivilegeError`` naming files under ``data_dir`` (down to ``depth``
    levels) that ``target`` does not own: it could not write or replace them once not root."""
    foreign: list[str] = []
    level = [data_dir]
    for _ in range(depth):
        below: list[Path] = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we look
                if st.st_uid != target.uid and len(foreign) < MAX_REPORTED:
                    foreign.append(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    below.append(Path(entry.path))
        level = below
    if foreign:
        raise PrivilegeError(f"{data_dir}: not owned by {target.name}: {', '.join(foreign)}"
                             f"{' …' if len(foreign) >= MAX_REPORTED else ''}; "
                             f"fix with: chown -R {target.name}: {data_dir}")


def cli_identity(config: Config) -> ServiceUser | None:
    """Rule 5: whom a command run as root acts as, or None (not root, or a root installation)."""
    if os.geteuid() != 0:
        return None
    if config.user is not None:
        return resolve(config.user, config.group, config.source)
    try:
        owner = config.data_dir.stat().st_uid
    except FileNotFoundError:
        return None
    if owner == 0:
        return None
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        raise PrivilegeError(f"{config.data_dir} belongs to uid {owner}, which has no user name; "
                             f"set user in {config.source}") from None
    return resolve(name, None, config.source)


def is_root() -> bool:
    return os.geteuid() == 0


__all__ = ["PrivilegeError", "ServiceUser", "bind_all", "check_tree", "cli_identity", "drop",
           "is_root", "prepare_data_dir", "resolve"]
