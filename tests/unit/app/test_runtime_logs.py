"""app.runtime: log_file reopened after logrotate moved it; log_syslog to facility mail."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon import maillog
from pigeon.app.runtime import reopen_logs, setup_logging
from pigeon.config import parse_config


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in saved:
        root.addHandler(h)
    root.setLevel(level)
    maillog.write_directly(None)


def test_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    cfg = parse_config('hostname = "mx.example.test"\ndata_dir = "d"\nlog_file = "logs/pigeon.log"\n',
                       "test.toml", tmp_path)
    setup_logging(cfg)
    logging.getLogger("pigeon").info("before rotation")
    log = tmp_path / "logs" / "pigeon.log"
    log.rename(tmp_path / "logs" / "pigeon.log.1")  # logrotate
    logging.getLogger("pigeon").info("still the old file")
    assert reopen_logs() == 1
    logging.getLogger("pigeon").info("after reopen")
    maillog.flush()
    assert "after reopen" in log.read_text()
    old = (tmp_path / "logs" / "pigeon.log.1").read_text()
    assert "before rotation" in old and "still the old file" in old and "after reopen" not in old


def test_log_syslog_sends_facility_mail(tmp_path: Path) -> None:
    path = str(tmp_path / "devlog")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        cfg = parse_config('hostname = "mx.example.test"\ndata_dir = "d"\nlog_syslog = true\n', "t.toml", tmp_path)
        setup_logging(cfg, syslog_address=path)
        logging.getLogger("pigeon").warning("to syslog")
        data = sock.recv(4096).decode()
        # RFC 5424 §6.2.1 / RFC 3164 §4.1.1: PRI = facility * 8 + severity; mail = 2, warning = 4.
        assert data.startswith("<20>pigeon[") and "WARNING pigeon: to syslog" in data
        maillog.admin("ABCDEF123456", "hold")  # the mail lines too (info: severity 6)
        line = sock.recv(4096).decode()
        assert line.startswith("<22>pigeon[") and "pigeon.mail: ABCDEF123456" in line
