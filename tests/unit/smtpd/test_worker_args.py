"""The hidden ``smtp-worker`` command line: the listening sockets handed down by the server."""

from __future__ import annotations

import pytest

from pigeon.admin.cli import build_parser


def test_listen_fds_are_parsed() -> None:
    args = build_parser().parse_args(["smtp-worker", "--index", "1", "--listen-fds", "5,6"])
    assert args.index == 1 and args.listen_fds == [5, 6]


def test_without_listen_fds_the_worker_binds_itself() -> None:
    args = build_parser().parse_args(["smtp-worker", "--index", "2"])
    assert args.listen_fds == []


@pytest.mark.parametrize("bad", ["a,b", "5,-1", "5;6", "../x"])
def test_nonsense_listen_fds_are_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["smtp-worker", "--index", "1", "--listen-fds", bad])
    assert info.value.code == 2
    assert "not a list of file descriptors" in capsys.readouterr().err
