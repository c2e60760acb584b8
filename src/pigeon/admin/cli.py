"""The ``pigeon`` command line.

Rules:
1. ``--config FILE`` is a global option, accepted before the subcommand and after it; without
   it, ``$PIGEON_CONFIG``, then ``/etc/pigeon/pigeon.toml``, then the embedded default
   (``pigeon.config.find_config``). Every subcommand finds the configuration the same way.
2. Queue commands talk to the running server through its control socket; when no server runs
   they work on the data directory directly (the server's lock proves nobody else is using it).
3. Exit codes: 0 success, 1 failure (message on stderr as ``pigeon: ...``), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pigeon.admin import directory_cmds, mail_cmd, route_cmd, sendmail
from pigeon.config import DEFAULT_CONFIG_TOML, Config, ConfigError, find_config
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


def _simple(cmd: str, op: Callable[..., object], verb: str) -> Callable[[argparse.Namespace, Config], int]:
    def run(args: argparse.Namespace, config: Config) -> int:
        result = _queue_call(config, cmd, lambda: op(_offline_queue(config), args.id), id=args.id)
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


def cmd_reports_send(args: argparse.Namespace, config: Config) -> int:
    """DMARC aggregate reports due now (pigeon.inbound.reports), sent by the running server
    through its queue."""
    def offline() -> JSONValue:
        raise ControlError("pigeon reports send needs the running server (it queues the reports); "
                           "start it with `pigeon serve`")

    ids = _queue_call(config, "reports.send", offline)
    queued = ids if isinstance(ids, list) else []
    for qid in queued:
        print(f"{qid}: DMARC aggregate report queued")
    print(f"{len(queued)} report(s) queued")
    return 0


def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    if args.print_default:
        print(DEFAULT_CONFIG_TOML)
        return 0
    print(f"{config.source}: OK (hostname={config.hostname}, data_dir={config.data_dir}, "
          f"domains={', '.join(config.domains) or '-'})")
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from pigeon.app import serve

    return serve(config)


def cmd_worker(args: argparse.Namespace, config: Config) -> int:
    from pigeon.app.worker import run_worker

    return run_worker(config, args.pool, args.index, args.services)


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("serve", parents=[common], help="run every configured service in the foreground")
    p.set_defaults(handler=cmd_serve)
    # Started by `pigeon serve` (app.master) for [smtp] processes > 1, not by hand (app.worker).
    p = sub.add_parser("worker", parents=[common], help=argparse.SUPPRESS)
    p.add_argument("--pool", type=_pool, required=True, help="the configuration section that asked for it (smtp)")
    p.add_argument("--index", type=_positive, required=True)
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

    r = sub.add_parser("reports", parents=[common], help="DMARC aggregate reports (RFC 7489 §7.2)")
    rs = r.add_subparsers(dest="reports_command", metavar="ACTION")
    rs.required = True
    p = rs.add_parser("send", parents=[common], help="send every report due now")
    p.set_defaults(handler=cmd_reports_send)

    p = sub.add_parser("mailq", parents=[common], help="list queued messages (pigeon queue list)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_queue_list)

    directory_cmds.register(sub, common)
    route_cmd.register(sub, common)
    sendmail.register(sub, common)
    mail_cmd.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = find_config(getattr(args, "config", None), os.environ)
    except ConfigError as exc:
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
