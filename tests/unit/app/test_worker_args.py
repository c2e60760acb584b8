"""The hidden ``pigeon worker`` command line (app.worker), and the command the master runs for
a worker: the listening sockets handed down by the server, per service."""

from __future__ import annotations

import sys

import pytest

from pigeon.admin.cli import build_parser
from pigeon.app.master import Pool, WorkerSpec, plan
from pigeon.app.worker import worker_command


def test_services_and_listen_fds_are_parsed() -> None:
    args = build_parser().parse_args(["worker", "--pool", "smtp", "--index", "1", "--service", "smtp=5,6",
                                      "--service", "imap=7"])
    assert (args.pool, args.index) == ("smtp", 1)
    assert args.services == [("smtp", [5, 6]), ("imap", [7])]


def test_a_service_without_fds_binds_itself() -> None:
    args = build_parser().parse_args(["worker", "--pool", "smtp", "--index", "2", "--service", "smtp"])
    assert args.services == [("smtp", [])]


@pytest.mark.parametrize(("bad", "why"), [
    (["--service", "smtp=a,b"], "not a list of file descriptors"),
    (["--service", "smtp=5,-1"], "not a list of file descriptors"),
    (["--service", "smtp=5;6"], "not a list of file descriptors"),
    (["--service", "smtp=,"], "not a list of file descriptors"),
    (["--service", "../x=5"], "not a service name"),
    (["--service", "SMTP=5"], "not a service name"),
    ([], "required: --service"),
    (["--service", "smtp", "--index", "0"], "not a positive integer"),
    (["--service", "smtp", "--pool", "a/b"], "not a pool name"),
])
def test_nonsense_is_refused(bad: list[str], why: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["worker", "--pool", "smtp", "--index", "1", *bad])
    assert info.value.code == 2
    assert why in capsys.readouterr().err


def test_the_master_runs_what_the_command_line_reads() -> None:
    spec = WorkerSpec("smtp", 3, (("smtp", (5, 6)),))
    argv = worker_command("/etc/pigeon/pigeon.toml")(spec)
    assert argv[:3] == [sys.executable, "-m", "pigeon"]
    args = build_parser().parse_args(argv[3:])
    assert (args.config, args.pool, args.index, args.services) == ("/etc/pigeon/pigeon.toml", "smtp", 3, [("smtp", [5, 6])])
    assert spec.pass_fds == (5, 6) and spec.services == ("smtp",) and spec.name == "smtp worker 3"


def test_the_plan_counts_indexes_over_every_pool() -> None:
    pools = [Pool("smtp", ("smtp",), 3), Pool("imap", ("imap", "imaps"), 2), Pool("pop3", ("pop3",), 4)]
    specs = plan(pools, {"smtp": [5], "imap": [7], "imaps": [8], "submission": [6]})
    assert [(s.name, s.listen) for s in specs] == [
        ("smtp worker 1", (("smtp", (5,)),)),
        ("smtp worker 2", (("smtp", (5,)),)),
        ("imap worker 3", (("imap", (7,)), ("imaps", (8,)))),
    ]  # pop3 has no listening sockets: no workers
    assert plan([Pool("smtp", ("smtp",), 1)], {"smtp": [5]}) == []
