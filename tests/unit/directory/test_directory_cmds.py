"""The directory commands (pigeon.admin.directory_cmds), run in-process on a temporary data_dir."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from pigeon.admin import directory_cmds
from pigeon.config import Config, parse_config
from pigeon.core.address import parse_address
from pigeon.directory import Directory


@pytest.fixture
def config(tmp_path: Path) -> Config:
    text = 'hostname = "mx.example.test"\ndata_dir = "data"\ndomains = ["example.test"]\n'
    return parse_config(text, str(tmp_path / "pigeon.toml"), tmp_path)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS)
    top = argparse.ArgumentParser(prog="pigeon", parents=[common])
    sub = top.add_subparsers(dest="command", required=True)
    directory_cmds.register(sub, common)
    return top


def run(
    config: Config,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    stdin: str = "",
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> tuple[int, str, str]:
    args = parser().parse_args(argv)
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = args.handler(args, config)
    out, err = capsys.readouterr()
    return code, out, err


def test_user_lifecycle(config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(config, capsys, "user", "add", "bob@example.test", "--password-stdin",
                         stdin="pa ss\n", monkeypatch=monkeypatch)
    assert (code, out, err) == (0, "user added: bob@example.test\n", "")
    assert "pa ss" not in out + err
    assert (config.data_dir / "directory.sqlite3").exists()

    code, out, err = run(config, capsys, "user", "add", "bob@example.test", "--password-stdin",
                         stdin="x\n", monkeypatch=monkeypatch)
    assert code == 1 and err == "pigeon: user bob@example.test already exists\n"

    answers = iter(["new secret", "new secret"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, out, _ = run(config, capsys, "user", "passwd", "bob@example.test")
    assert code == 0 and "new secret" not in out
    with Directory(config.directory_path, config.domains, None) as d:
        assert d.verify_password("bob@example.test", "new secret")

    code, out, _ = run(config, capsys, "user", "forward", "bob@example.test", "b@remote.example", "--keep")
    assert code == 0 and out == "bob@example.test forwards to b@remote.example (keeps a copy)\n"
    code, out, _ = run(config, capsys, "user", "list")
    assert out == "bob@example.test\tforward: b@remote.example (keeps a copy)\n"
    code, out, _ = run(config, capsys, "user", "forward", "bob@example.test")
    assert out == "bob@example.test: forward cleared\n"
    code, out, err = run(config, capsys, "user", "forward", "bob@example.test", "--keep")
    assert code == 2 and "--keep needs at least one TARGET" in err

    code, out, _ = run(config, capsys, "user", "remove", "bob@example.test")
    assert code == 0 and out.startswith("user removed: bob@example.test")
    code, out, _ = run(config, capsys, "user", "list")
    assert (code, out) == (0, "")


def test_password_prompts(config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = run(config, capsys, "user", "add", "bob@example.test")
    assert code == 1 and err == "pigeon: the passwords do not match\n"

    def eof(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", eof)
    code, _, err = run(config, capsys, "user", "add", "bob@example.test")
    assert code == 1 and "--password-stdin" in err
    code, _, err = run(config, capsys, "user", "add", "bob@example.test", "--password-stdin",
                       stdin="\n", monkeypatch=monkeypatch)
    assert code == 1 and err == "pigeon: the password is empty\n"
    code, _, err = run(config, capsys, "user", "passwd", "ghost@example.test", "--password-stdin",
                       stdin="x\n", monkeypatch=monkeypatch)
    assert code == 1 and err == "pigeon: no such user: ghost@example.test\n"
    # refused before any password is asked for
    monkeypatch.setattr("getpass.getpass", eof)
    code, _, err = run(config, capsys, "user", "add", "bob@elsewhere.example")
    assert code == 1 and err == (
        "pigeon: elsewhere.example is not a local domain (add it with: pigeon domain add elsewhere.example)\n")
    code, _, err = run(config, capsys, "user", "add", "not-an-address")
    assert code == 1 and err == "pigeon: user 'not-an-address': address must be local@domain\n"


def test_domains(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, capsys, "domain", "add", "Example.ORG")[:2] == (0, "domain added: example.org\n")
    assert run(config, capsys, "domain", "list")[1] == "example.org\nexample.test\t(config file)\n"
    code, _, err = run(config, capsys, "domain", "remove", "example.test")
    assert code == 1 and "config file" in err
    assert run(config, capsys, "domain", "remove", "example.org")[0] == 0
    assert run(config, capsys, "domain", "list")[1] == "example.test\t(config file)\n"


def test_aliases(config: Config, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(config, capsys, "alias", "add", "team@example.test", "a@example.test", "b@remote.example")[0] == 0
    assert run(config, capsys, "alias", "add", "@example.test", "a@example.test")[0] == 0
    assert run(config, capsys, "alias", "list")[1] == (
        "@example.test: a@example.test\nteam@example.test: a@example.test, b@remote.example\n")
    assert run(config, capsys, "alias", "remove", "team@example.test", "b@remote.example")[0] == 0
    assert run(config, capsys, "alias", "remove", "@example.test")[0] == 0
    assert run(config, capsys, "alias", "list")[1] == "team@example.test: a@example.test\n"
    code, _, err = run(config, capsys, "alias", "remove", "team@example.test", "zzz@example.test")
    assert code == 1 and err.startswith("pigeon: no such alias")

    aliases = tmp_path / "aliases"
    aliases.write_text("postmaster: a\nabuse: a, x@remote.example\n", encoding="utf-8")
    code, out, _ = run(config, capsys, "aliases", "import", str(aliases))
    assert (code, out) == (0, f"imported 2 alias(es) from {aliases}\n")
    with Directory(config.directory_path, config.domains, None) as d:
        assert [str(a) for a in d.expand(parse_address("abuse@example.test"))] == [
            "a@example.test", "x@remote.example"]

    aliases.write_text("ok: a\nbad: |/bin/evil\n", encoding="utf-8")
    code, _, err = run(config, capsys, "aliases", "import", str(aliases))
    assert code == 1 and err.startswith(f"pigeon: {aliases}:2: ")
    code, _, err = run(config, capsys, "aliases", "import", str(tmp_path / "missing"))
    assert code == 1 and "cannot read" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["user"], ["alias", "add", "x@example.test"], ["domain", "rename", "x"]):
        with pytest.raises(SystemExit) as info:
            parser().parse_args(argv)
        assert info.value.code == 2
    capsys.readouterr()


def test_config_option_after_the_subcommand() -> None:
    args = parser().parse_args(["user", "list", "--config", "/etc/p.toml"])
    assert args.config == "/etc/p.toml"
    args = parser().parse_args(["--config", "/etc/q.toml", "alias", "list"])
    assert args.config == "/etc/q.toml"
