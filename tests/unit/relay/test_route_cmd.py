"""``pigeon route ADDRESS`` in-process, against a real DNS server on loopback."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.admin import directory_cmds, route_cmd
from pigeon.config import Config, parse_config
from tests.unit.dns.zone_server import ZoneServer

ZONE = {
    "remote.test": [("MX", "10 mx1.remote.test"), ("MX", "20 mx2.remote.test")],
    "mx1.remote.test": [("A", "192.0.2.1")],
    "mx2.remote.test": [("A", "192.0.2.2"), ("AAAA", "2001:db8::2")],
    "plain.test": [("A", "192.0.2.3")],
    "nomail.test": [("MX", "0 .")],
}


@pytest.fixture
def dns() -> Iterator[ZoneServer]:
    with ZoneServer(ZONE) as srv:
        yield srv


def _config(tmp_path: Path, dns: ZoneServer, extra: str = "") -> Config:
    text = (f'hostname = "mx.example.test"\ndata_dir = "data"\ndomains = ["example.test"]\n'
            f'relay_domains = ["remote.test"]\n{extra}\n'
            f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n[delivery]\nremote_port = 2525\n')
    return parse_config(text, str(tmp_path / "pigeon.toml"), tmp_path)


def _run(config: Config, capsys: pytest.CaptureFixture[str], address: str) -> tuple[int, str]:
    common = argparse.ArgumentParser(add_help=False)
    top = argparse.ArgumentParser(prog="pigeon", parents=[common])
    sub = top.add_subparsers(dest="command", required=True)
    route_cmd.register(sub, common)
    args = top.parse_args(["route", address])
    code = args.handler(args, config)
    out, err = capsys.readouterr()
    return code, out + err


def test_remote_mx_list(tmp_path: Path, dns: ZoneServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(_config(tmp_path, dns), capsys, "bob@remote.test")
    assert code == 0
    assert "relay domain" in out
    assert "MX 10 mx1.remote.test port 2525: 192.0.2.1" in out
    assert "MX 20 mx2.remote.test port 2525: 192.0.2.2, 2001:db8::2" in out


def test_implicit_null_and_nxdomain(tmp_path: Path, dns: ZoneServer, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, dns)
    code, out = _run(cfg, capsys, "x@plain.test")
    assert code == 0 and "implicit MX" in out and "192.0.2.3" in out
    code, out = _run(cfg, capsys, "x@nomail.test")
    assert code == 1 and "556 5.1.10" in out
    code, out = _run(cfg, capsys, "x@nowhere.test")
    assert code == 1 and "550 5.1.2" in out


def test_local_user_and_alias(tmp_path: Path, dns: ZoneServer, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, dns)
    with directory_cmds.open_directory(cfg) as d:
        d.add_user("alice@example.test", "pw-123456")
        d.add_alias("team@example.test", ["alice@example.test", "carol@remote.test"])
    code, out = _run(cfg, capsys, "alice@example.test")
    assert code == 0 and "mailbox" in out and "example.test/alice" in out
    code, out = _run(cfg, capsys, "team@example.test")
    assert code == 0
    assert "→ alice@example.test: mailbox" in out
    assert "→ carol@remote.test: remote" in out and "mx1.remote.test" in out
    code, out = _run(cfg, capsys, "nobody@example.test")
    assert code == 1 and "unknown" in out


def test_smarthost_shown(tmp_path: Path, dns: ZoneServer, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parse_config(f'hostname = "mx.example.test"\ndata_dir = "data"\n[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n'
                       '[delivery]\nsmarthost = "192.0.2.77:587"\n', str(tmp_path / "p.toml"), tmp_path)
    code, out = _run(cfg, capsys, "bob@remote.test")
    assert code == 0 and "smarthost" in out and "192.0.2.77 port 587" in out


def test_bad_address(tmp_path: Path, dns: ZoneServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(_config(tmp_path, dns), capsys, "not an address")
    assert code == 1 and "pigeon:" in out
