"""The ``pigeon`` command line.

Rules:
1. ``--config FILE`` is a global option, accepted before the subcommand and after it; without
   it, ``$PIGEON_CONFIG``, then ``/etc/pigeon/pigeon.toml``, then the embedded default
   (``pigeon.config.find_config``). Every subcommand finds the configuration the same way.
2. Queue commands talk to the running server through its control socket; when no server runs
   they work on the data directory directly (the server's lock proves nobody else is using it).
3. Exit codes: 0 success, 1 failure (message on stderr as ``pigeon: ...``), 2 usage.
4. The data directory: ``serve``, ``domain add``, ``user add``, ``user import`` and ``restore``
   may create a missing one;
   every other command refuses, naming the path and the configuration that set it (a typo in
   ``data_dir`` must not start a new, empty installation). ``check-config`` only reports it.
5. Run as root, a command acts as the service user (``app.privileges.cli_identity``: ``user``
   of the configuration, else the data directory's owner when that is not root) before it
   touches the data directory, so that every file it creates belongs to the user the server
   runs as. ``serve`` drops by itself once its ports are bound.
6. ``pigeon --version`` and ``pigeon version`` print the version and need no configuration.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pigeon import __version__
from pigeon.admin import backup_cmd, dkim_cmds, directory_cmds, mail_cmd, migrate_cmd, reports_cmd, route_cmd, sendmail
from pigeon.app import preflight
from pigeon.app.privileges import PrivilegeError, ServiceUser, cli_identity, drop
from pigeon.config import DEFAULT_CONFIG_TOML, EMBEDDED_SOURCE, Config, ConfigError, find_config
from pigeon.directory import Directory, DirectoryError
from pigeon.control import queueops
from pigeon.control.client import ControlError, ControlUnavailable, call, server_running
from pigeon.control.protocol import JSONValue
from pigeon.queue.store import FileQueueStore


def _queue_call(config: Config, cmd: str, offline: Callable[[], JSONValue], **args: JSONValue) -> JSONValue:
    try:
        return call(config.data_dir, cmd, 30.0, **args)
    except ControlUnavailable:
        if server_running(config.data_dir):
            raise ControlError("the server holds the data directory but its control socket does not answer")
        return offline()


def _offline_queue(config: Config) -> FileQueueStore:
    from pigeon.clocks import SystemClock

    return FileQueueStore(config.data_dir / "queue", SystemClock())


def _fmt_age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def cmd_queue_list(args: argparse.Namespace, config: Config) -> int:
    result = _queue_call(config, "queue.list",
                         lambda: queueops.list_queue(_offline_queue(config), time.time()))
    assert isinstance(result, list)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not result:
        print("Mail queue is empty")
        return 0
    print(f"{'Queue ID':<17} {'State':<9} {'Age':>5} {'Size':>9}  Sender / Recipients")
    total = 0
    for m in result:
        assert isinstance(m, dict)
        total += int(m["size"])
        print(f"{m['id']:<17} {m['state']:<9} {_fmt_age(float(m['age'])):>5} {m['size']:>9}  {m['sender']}")
        for r in m["recipients"]:
            line = f"{'':<44}{r['address']} ({r['status']})"
            print(line)
            if r["status"] == "deferred" and r["last_reply"]:
                print(f"{'':<46}{r['last_reply']}")
    print(f"-- {total // 1024} Kbytes in {len(result)} Requests.")
    return 0


def cmd_queue_show(args: argparse.Namespace, config: Config) -> int:
    m = _queue_call(config, "queue.show",
                    lambda: queueops.show(_offline_queue(config), args.id, time.time()), id=args.id)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    assert isinstance(m, dict)
    print(f"Queue ID:  {m['id']}\nState:     {m['state']}\nAge:       {_fmt_age(float(m['age']))}")
    print(f"Size:      {m['size']}\nSender:    {m['sender']}")
    env = m["envelope"]
    assert isinstance(env, dict)
    client = env.get("client") or {}
    print(f"Client:    {client}")
    for k in ("body", "smtputf8", "ret", "envid"):
        if env.get(k):
            print(f"{k.upper():<10} {env[k]}")
    dsn = [r for r in env.get("recipients") or [] if r.get("notify") or r.get("orcpt")]
    if dsn:
        print("DSN:")  # RFC 3461 §4.1, §4.2: what the envelope asked for, per original recipient
        for r in dsn:
            notify = ",".join(r.get("notify") or []) or "-"
            print(f"  {r['address']}: NOTIFY={notify} ORCPT={r.get('orcpt') or '-'}")
    print("Recipients:")
    history = m.get("history") or {}
    for r in m["recipients"]:
        orig = f" (originally {r['original']})" if r["original"] != r["address"] else ""
        print(f"  {r['address']}{orig}: {r['status']}")
        for a in history.get(r["address"], []):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["time"]))
            print(f"    {when} {a['host']}: {a['reply']}")
    print("Headers:")
    print(str(m["headers"]).rstrip())
    return 0


def _locked(config: Config, op: Callable[[FileQueueStore], JSONValue]) -> JSONValue:
    """``op`` on the stopped server's queue, holding the data directory lock (as ``pigeon
    serve`` does), so that a server starting meanwhile cannot recover the queue under it:
    ``delete`` and ``hold`` may move what the intake journals hold into the queue files
    (``queueops`` rule 3)."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(config.data_dir / "pigeon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ControlError("a server started meanwhile; run the command again") from None
        queue = _offline_queue(config)
        try:
            return op(queue)
        finally:
            queue.close()
    finally:
        os.close(fd)


def _simple(cmd: str, op: Callable[..., JSONValue], verb: str) -> Callable[[argparse.Namespace, Config], int]:
    def run(args: argparse.Namespace, config: Config) -> int:
        result = _queue_call(config, cmd, lambda: _locked(config, lambda q: op(q, args.id)), id=args.id)
        print(f"{result}: {verb}")
        return 0

    return run


def cmd_queue_flush(args: argparse.Namespace, config: Config) -> int:
    def offline() -> JSONValue:
        q = _offline_queue(config)
        n = 0
        for rec in q.scan(("deferred",)):
            for r in rec.rcpts:
                if r.status == "deferred":
                    r.next_try = 0.0
            q.update_sync(rec)
            n += 1
        return n

    n = _queue_call(config, "queue.flush", offline)
    print(f"{n} deferred message(s) scheduled for immediate delivery")
    return 0


def cmd_queue_bounce(args: argparse.Namespace, config: Config) -> int:
    def offline() -> JSONValue:
        raise ControlError("pigeon queue bounce needs the running server (it sends the DSN); "
                           "start it with `pigeon serve`")

    result = _queue_call(config, "queue.bounce", offline, id=args.id)
    assert isinstance(result, dict)
    print(f"{result['id']}: {result['failed']} recipient(s) failed, delivery status notification sent")
    return 0


class DataDirMissing(Exception):
    """Rule 4: a command that needs the data directory, which does not exist."""


def _where(config: Config) -> str:
    if config.source == EMBEDDED_SOURCE:
        return "data_dir of the embedded default configuration, or $PIGEON_HOME"
    return f"data_dir in {config.source}"


def enter_data_dir(config: Config, creates: bool) -> ServiceUser | None:
    """Rules 4 and 5: check (or create) the data directory and become the service user; returns
    whom the command now runs as when it changed (None: unchanged)."""
    data = config.data_dir
    target = cli_identity(config)
    if not data.is_dir():
        if data.exists():
            raise DataDirMissing(f"{data}: not a directory ({_where(config)})")
        if not creates:
            raise DataDirMissing(f"{data}: no such data directory ({_where(config)}); "
                                 "`pigeon serve`, `pigeon domain add` or `pigeon user add` create it")
        data.mkdir(parents=True, mode=0o700)
        if target is not None:
            os.chown(data, target.uid, target.gid)
    if target is None:
        return None
    owner = data.stat().st_uid
    if owner != target.uid:
        raise PrivilegeError(f"{data} belongs to uid {owner}, not to {target.name}, the user the server runs as; "
                             f"fix with: chown -R {target.name}: {data}")
    drop(target)
    return target


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    if args.print_default:
        print(DEFAULT_CONFIG_TOML)
        return 0
    problems = preflight.problems(config)
    if config.data_dir.is_dir():
        try:
            enter_data_dir(config, creates=False)  # opening the directory must not leave root's files
            with Directory(config.directory_path, config.domains, config.postmaster,
                           config.smtp.recipient_delimiter) as directory:
                problem = preflight.postmaster_problem(config, directory)
        except (PrivilegeError, DirectoryError, OSError) as exc:
            problem = f"{config.data_dir}: {exc}"
        if problem is not None:
            problems.append(problem)
    elif not config.data_dir.exists():
        print(f"{config.source}: note: data_dir {config.data_dir} does not exist yet "
              "(`pigeon serve`, `pigeon domain add` or `pigeon user add` create it)")
    for problem in problems:
        print(f"pigeon: {problem}", file=sys.stderr)
    if problems:
        print(f"{config.source}: {len(problems)} problem(s); `pigeon serve` refuses to start", file=sys.stderr)
        return 1
    print(f"{config.source}: OK (hostname={config.hostname}, data_dir={config.data_dir}, "
          f"domains={', '.join(config.domains) or '-'}"
          f"{f', user={config.user}' if config.user else ''})")
    return 0


def cmd_version(args: argparse.Namespace, config: Config | None) -> int:
    print(f"pigeon {__version__}")
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from pigeon.app import serve

    return serve(config)


def cmd_worker(args: argparse.Namespace, config: Config) -> int:
    from pigeon.app.worker import run_worker

    return run_worker(config, args.pool, args.index, args.services, args.board)


def _board(text: str) -> tuple[int, int]:
    """``--board 7:3``: an inherited load board's descriptor and its number of slots."""
    fd, _, slots = text.partition(":")
    if not (fd.isdigit() and slots.isdigit() and int(slots) > 0):
        raise argparse.ArgumentTypeError(f"not a load board (FD:SLOTS): {text!r}")
    return int(fd), int(slots)


def _service_fds(text: str) -> tuple[str, list[int]]:
    """``--service smtp=5,6``: a service and the listening sockets inherited for it (each a
    non-negative descriptor); ``--service smtp`` alone binds its configured addresses."""
    name, _, fds = text.partition("=")
    if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", name):
        raise argparse.ArgumentTypeError(f"not a service name: {text!r}")
    try:
        numbers = [int(part) for part in fds.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of file descriptors: {text!r}") from None
    if any(fd < 0 for fd in numbers) or (fds and not numbers):
        raise argparse.ArgumentTypeError(f"not a list of file descriptors: {text!r}")
    return name, numbers


def _pool(text: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", text):
        raise argparse.ArgumentTypeError(f"not a pool name: {text!r}")
    return text


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                        help="configuration file (default: $PIGEON_CONFIG, /etc/pigeon/pigeon.toml, embedded default)")
    parser = argparse.ArgumentParser(prog="pigeon", parents=[common],
                                     description="Pigeon: a complete Internet mail system")
    parser.add_argument("--version", action="version", version=f"pigeon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("version", help="print the version and exit")
    p.set_defaults(handler=cmd_version)

    p = sub.add_parser("serve", parents=[common], help="run every configured service in the foreground")
    p.set_defaults(handler=cmd_serve)
    # Started by `pigeon serve` (app.master) for [smtp] processes > 1, not by hand (app.worker).
    p = sub.add_parser("worker", parents=[common], help=argparse.SUPPRESS)
    p.add_argument("--pool", type=_pool, required=True, help="the configuration section that asked for it (smtp)")
    p.add_argument("--index", type=_positive, required=True)
    p.add_argument("--board", type=_board, default=None, metavar="FD:SLOTS",
                   help="the pool's load board, inherited (net.loadboard)")
    p.add_argument("--service", dest="services", action="append", type=_service_fds, required=True,
                   metavar="NAME[=FD,...]", help="a service to serve, with its inherited listening sockets")
    p.set_defaults(handler=cmd_worker)
    p = sub.add_parser("check-config", parents=[common], help="validate the configuration and exit")
    p.add_argument("--print-default", action="store_true", help="print the embedded default configuration")
    p.set_defaults(handler=cmd_check_config)

    q = sub.add_parser("queue", parents=[common], help="inspect and act on the mail queue")
    qs = q.add_subparsers(dest="queue_command", metavar="ACTION")
    qs.required = True
    p = qs.add_parser("list", parents=[common], help="list queued messages (like mailq)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_queue_list)
    p = qs.add_parser("show", parents=[common], help="envelope, per-recipient history and headers")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_queue_show)
    for name, cmd, op, verb, helptext in [
        ("delete", "queue.delete", queueops.delete, "deleted", "delete a message from the queue"),
        ("hold", "queue.hold", queueops.hold, "put on hold", "stop delivery attempts for a message"),
        ("release", "queue.release", queueops.release, "released", "release a held message"),
    ]:
        p = qs.add_parser(name, parents=[common], help=helptext)
        p.add_argument("id")
        p.set_defaults(handler=_simple(cmd, op, verb))
    p = qs.add_parser("bounce", parents=[common], help="fail a message now and return it to its sender")
    p.add_argument("id")
    p.set_defaults(handler=cmd_queue_bounce)
    p = qs.add_parser("flush", parents=[common], help="retry every deferred message now")
    p.set_defaults(handler=cmd_queue_flush)

    p = sub.add_parser("mailq", parents=[common], help="list queued messages (pigeon queue list)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_queue_list)

    directory_cmds.register(sub, common)
    route_cmd.register(sub, common)
    dkim_cmds.register(sub, common)
    reports_cmd.register(sub, common)
    sendmail.register(sub, common)
    mail_cmd.register(sub, common)
    backup_cmd.register(sub, common)
    migrate_cmd.register(sub, common)
    return parser


# Rule 4: the commands that may create a missing data directory (serve creates it itself);
# `user import` and `restore` say so with ``set_defaults(creates_data_dir=True)``.
CREATES_DATA_DIR = (directory_cmds.domain_add, directory_cmds.user_add)
# Commands that handle the data directory themselves: check-config reports, serve creates and
# drops privileges after binding, worker runs as the server made it.
OWN_DATA_DIR = ("serve", "worker", "check-config")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        return cmd_version(args, None)  # rule 6: no configuration needed
    try:
        config = find_config(getattr(args, "config", None), os.environ)
    except ConfigError as exc:
        print(f"pigeon: {exc}", file=sys.stderr)
        return 1
    if args.command not in OWN_DATA_DIR:
        try:
            enter_data_dir(config, creates=args.handler in CREATES_DATA_DIR
                           or getattr(args, "creates_data_dir", False))
        except (DataDirMissing, PrivilegeError, OSError) as exc:
            print(f"pigeon: {exc}", file=sys.stderr)
            return 1
    try:
        rc: int = args.handler(args, config)
        return rc
    except (ControlError, ValueError, FileNotFoundError, LookupError) as exc:
        print(f"pigeon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
