"""The sendmail command (pigeon.admin.sendmail) and local submission (pigeon.submission.spool),
over a real queue, directory and control socket in a temporary data directory."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.admin import sendmail
from pigeon.admin.sendmail import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOUSER,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
    Options,
    SendmailError,
    parse_args,
    prepare,
    run,
)
from pigeon.cleanup.intake import Intake
from pigeon.clocks import SystemClock
from pigeon.config import Config, parse_config
from pigeon.control.client import socket_path
from pigeon.control.server import ControlServer
from pigeon.directory import Directory
from pigeon.queue.record import QueueRecord
from pigeon.queue.store import QueueStore
from pigeon.submission.spool import SpooledMessage, make_submit_handler, maildrop_dir, sweep_maildrop

HOST = "mx.example.test"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    text = f'hostname = "{HOST}"\ndata_dir = "data"\ndomains = ["example.test"]\n'
    (tmp_path / "pigeon.toml").write_text(text)
    return parse_config(text, str(tmp_path / "pigeon.toml"), tmp_path)


def queued(config: Config) -> list[tuple[QueueRecord, bytes]]:
    queue = QueueStore(config.data_dir / "queue", SystemClock())
    try:
        out = []
        for rec in queue.scan():
            with queue.open_body(rec.id) as f:
                out.append((rec, f.read()))
        return out
    finally:
        queue.close()


def send(config: Config, message: bytes, *argv: str) -> tuple[int, str]:
    err = io.StringIO()
    code = run(parse_args(argv), config, io.BytesIO(message), err)
    return code, err.getvalue()


def prep(message: bytes, tmp_path: Path, *argv: str, max_size: int = 10**6) -> tuple[sendmail.Prepared, bytes]:
    drop = maildrop_dir(tmp_path)
    prepared = prepare(io.BytesIO(message), parse_args(argv), HOST, "cron", drop, max_size)
    return prepared, (drop / prepared.name).read_bytes()


# -- arguments -------------------------------------------------------------------------------


def test_sendmail_conventions_parse() -> None:
    o = parse_args(["-t", "-oi", "-fbounce@example.test", "-F", "Cron Daemon", "-oem", "-odb", "a@x.example"])
    assert o == Options(recipients=["a@x.example"], extract=True, ignore_dots=True,
                        sender="bounce@example.test", full_name="Cron Daemon")
    o = parse_args(["a@x.example", "-i", "b@x.example", "-r", "<>", "-N", "success,delay", "-R", "hdrs"])
    assert o.recipients == ["a@x.example", "b@x.example"] and o.ignore_dots and o.sender == "<>"
    assert o.notify == ("SUCCESS", "DELAY") and o.ret == "HDRS"
    assert parse_args(["-C", "/etc/p.toml", "-bm", "x"]).config == "/etc/p.toml"
    for bad in (["-bp"], ["-X", "log"], ["-N", "sometimes"], ["-N", "never,success"], ["-R", "all"]):
        with pytest.raises(SendmailError) as info:
            parse_args(bad)
        assert info.value.status == EX_USAGE


def test_registered_as_pigeon_subcommand() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS)
    top = argparse.ArgumentParser(prog="pigeon", parents=[common])
    sub = top.add_subparsers(dest="command", required=True)
    sendmail.register(sub, common)
    ns = top.parse_args(["sendmail", "-t", "-oi", "-f", "me@example.test", "--config", "x.toml"])
    assert ns.handler is sendmail.cmd_sendmail and ns.config == "x.toml"
    assert sendmail.options_from(ns) == Options(extract=True, ignore_dots=True, sender="me@example.test")


# -- reading the message ---------------------------------------------------------------------


def test_line_ends_dots_and_mbox_line(tmp_path: Path) -> None:
    msg = b"From cron Mon Jan  1 00:00:00 2024\nSubject: hi\n\nline 1\r\nline 2\n.\nafter the dot\n"
    prepared, data = prep(msg, tmp_path, "root")
    assert data == b"From: cron@mx.example.test\r\nSubject: hi\r\n\r\nline 1\r\nline 2\r\n"
    assert [str(r) for r in prepared.recipients] == ["root@mx.example.test"]  # qualified
    assert str(prepared.sender) == "cron@mx.example.test"  # the Unix user at hostname

    _, data = prep(msg, tmp_path, "-oi", "root")
    assert data.endswith(b"line 2\r\n.\r\nafter the dot\r\n")
    _, data = prep(b"Subject: x\n\nno final newline", tmp_path, "-i", "root")
    assert data.endswith(b"\r\nno final newline\r\n")
    _, data = prep(b"Subject: x", tmp_path, "-i", "root")  # ends inside the header section
    assert data == b"From: cron@mx.example.test\r\nSubject: x\r\n"


def test_long_lines_are_streamed_in_pieces(tmp_path: Path) -> None:
    long = b"x" * 200_000
    prepared, data = prep(b"Subject: x\n\n" + long + b"\r\nend\n", tmp_path, "-i", "root")
    assert data.endswith(b"\r\n\r\n" + long + b"\r\nend\r\n")
    assert prepared.size == len(data) and not prepared.eight_bit
    cr_at_boundary = b"y" * (sendmail.READ_LIMIT - 1) + b"\r\nz\n"
    _, data = prep(b"Subject: x\n\n" + cr_at_boundary, tmp_path, "-i", "root")
    assert data.endswith(b"y\r\nz\r\n") and b"\r\r" not in data


def test_t_takes_to_cc_bcc_and_removes_bcc(tmp_path: Path) -> None:
    msg = (b"From: Alice <alice@example.test>\n"
           b"To: Bob <bob@example.test>, carol@example.test\n"
           b"Cc: dave\n"
           b"Bcc: secret@example.test,\n  hidden@elsewhere.example\n"
           b"Subject: plans\n\nBcc: this line is body text\n")
    prepared, data = prep(msg, tmp_path, "-t", "extra@example.test", "bob@example.test")
    assert [str(r) for r in prepared.recipients] == [
        "extra@example.test", "bob@example.test", "carol@example.test", "dave@mx.example.test",
        "secret@example.test", "hidden@elsewhere.example"]
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Bcc" not in head and b"secret" not in head and b"hidden" not in head
    assert body == b"Bcc: this line is body text\r\n"
    assert head.startswith(b"From: Alice <alice@example.test>\r\nTo: Bob")


def test_t_prefers_resent_fields(tmp_path: Path) -> None:
    msg = (b"To: original@example.test\nResent-To: new@example.test\nResent-Bcc: quiet@example.test\n"
           b"Bcc: old-bcc@example.test\n\nbody\n")
    prepared, data = prep(msg, tmp_path, "-t")
    assert [str(r) for r in prepared.recipients] == ["new@example.test", "quiet@example.test"]
    assert b"Bcc" not in data and b"To: original@example.test" in data


def test_from_added_with_full_name_and_8bit(tmp_path: Path) -> None:
    prepared, data = prep("Subject: é\n\nbody ü\n".encode(), tmp_path, "-F", "Jörg Cron", "-f", "jobs", "root")
    assert data.startswith(b"From: =?utf-8?q?J=C3=B6rg_Cron?= <jobs@mx.example.test>\r\n")
    assert prepared.eight_bit and str(prepared.sender) == "jobs@mx.example.test"
    prepared, _ = prep(b"Subject: x\n\n", tmp_path, "-f", "<>", "root")
    assert prepared.sender is None


@pytest.mark.parametrize(
    ("message", "argv", "status"),
    [
        (b"Subject: none\n\n", ["-t"], EX_USAGE),  # no recipients at all
        (b"Subject: none\n\n", [], EX_USAGE),
        (b"Subject: x\n\n", ["bad address@@example.test"], EX_NOUSER),
        (b"To: a@b@c.example\n\n", ["-t"], EX_NOUSER),
        (b"Subject: x\n\n" + b"a" * 2000 + b"\n", ["root"], EX_DATAERR),  # over max_size
        (b"Subject: x\n\n", ["-f", "bad sender@@x", "root"], EX_DATAERR),
        (b"X-Big: " + b"h" * (1024 * 1024 + 10) + b"\n\n", ["root"], EX_DATAERR),
    ],
)
def test_prepare_errors_have_sysexits_codes(tmp_path: Path, message: bytes, argv: list[str], status: int) -> None:
    with pytest.raises(SendmailError) as info:
        prep(message, tmp_path, *argv, max_size=1000 if status == EX_DATAERR and b"a" * 2000 in message else 10**7)
    assert info.value.status == status


# -- handing over ----------------------------------------------------------------------------


def test_offline_path_queues_into_the_data_directory(config: Config) -> None:
    config.data_dir.mkdir(mode=0o700)
    with Directory(config.directory_path, config.domains, None) as d:
        d.add_user("bob@example.test", "pw-of-bob-1")
    msg = b"To: bob@example.test\nBcc: hidden@example.test\nSubject: nightly\n\nall good\n"
    code, err = send(config, msg, "-t", "-oi")
    assert (code, err) == (EX_OK, "")
    [(rec, body)] = queued(config)
    assert [str(r.address) for r in rec.rcpts] == ["bob@example.test", "hidden@example.test"]
    assert rec.envelope.client.address == "local" and rec.envelope.client.protocol == "local"
    assert str(rec.envelope.sender).endswith("@mx.example.test")
    head = body.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"Received: by mx.example.test (Pigeon, from userid ")
    assert b"\r\nMessage-ID: <" in head and b"\r\nDate: " in head  # the submission fix-ups
    assert b"Bcc" not in head and b"hidden" not in head
    assert body.endswith(b"\r\n\r\nall good\r\n")
    assert list((config.data_dir / "maildrop").iterdir()) == []  # the command cleaned up


def test_refused_messages_map_to_exit_codes(config: Config) -> None:
    loop = b"".join(b"Received: from hop%d\n" % i for i in range(101)) + b"\nbody\n"
    code, err = send(config, loop, "-i", "someone@example.test")
    assert code == EX_DATAERR and "5.4.6" in err
    assert queued(config) == []
    assert list((config.data_dir / "maildrop").iterdir()) == []


def test_server_holding_the_lock_without_socket_is_tempfail(config: Config) -> None:
    config.data_dir.mkdir(parents=True)
    fd = os.open(config.data_dir / "pigeon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, err = send(config, b"Subject: x\n\nbody\n", "root")
    finally:
        os.close(fd)
    assert code == EX_TEMPFAIL and "try again" in err
    assert queued(config) == []


def test_online_path_through_the_control_socket(config: Config) -> None:
    config.data_dir.mkdir(parents=True)
    submitted: list[QueueRecord] = []

    async def scenario() -> tuple[int, str]:
        queue = QueueStore(config.data_dir / "queue", SystemClock())
        directory = Directory(config.directory_path, config.domains, None)
        server = ControlServer(socket_path(config.data_dir))
        intake = Intake(queue, directory, HOST, SystemClock())
        server.register("sendmail.submit", make_submit_handler(intake, config.data_dir, submitted.append))
        await server.start()
        try:
            err = io.StringIO()
            msg = b"From: cron@example.test\nSubject: online\n\n" + b"line\n" * 50_000
            code = await asyncio.to_thread(run, parse_args(["-i", "-N", "never", "a@example.test"]),
                                           config, io.BytesIO(msg), err)
            await asyncio.sleep(0.05)  # let the control connection finish closing
            return code, err.getvalue()
        finally:
            await server.stop()
            queue.close()
            directory.close()

    code, err = asyncio.run(scenario())
    assert (code, err) == (EX_OK, "")
    [record] = submitted
    [(rec, body)] = queued(config)
    assert rec.id == record.id and rec.rcpts[0].notify == ("NEVER",)
    head, _, text = body.partition(b"\r\n\r\n")
    assert text == b"line\r\n" * 50_000 and b"\r\nMessage-ID: <" in head
    assert list((config.data_dir / "maildrop").iterdir()) == []


def test_submit_handler_refuses_foreign_paths(config: Config) -> None:
    for name in ("../queue/msg/X", "/etc/passwd", "a.msg", ""):
        with pytest.raises(ValueError):
            SpooledMessage.from_json({"file": name, "recipients": ["a@example.test"]})
    with pytest.raises(ValueError):
        SpooledMessage.from_json({"file": "1-2-0123456789abcdef.msg", "recipients": []})
    ok = SpooledMessage.from_json({"file": "1-2-0123456789abcdef.msg", "recipients": ["a@example.test"],
                                   "sender": "", "body": "8BITMIME"})
    assert ok.sender is None and ok.body == "8BITMIME"


def test_sweep_removes_only_stale_maildrop_files(tmp_path: Path) -> None:
    drop = maildrop_dir(tmp_path)
    old = drop / "1-2-0123456789abcdef.msg"
    new = drop / "3-4-0123456789abcdef.msg"
    other = drop / "README"
    for p in (old, new, other):
        p.write_bytes(b"x")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(other, (1_000_000, 1_000_000))
    assert sweep_maildrop(drop, 1_000_000 + 2 * 86400) == 1
    assert sorted(p.name for p in drop.iterdir()) == sorted([new.name, other.name])


def test_main_entry_point(config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    def stdin(data: bytes) -> None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))

    stdin(b"Subject: main\n\nhello\n")
    assert sendmail.main(["-C", str(tmp_path / "pigeon.toml"), "root"]) == EX_OK
    assert len(queued(config)) == 1
    assert sendmail.main(["-C", str(tmp_path / "missing.toml"), "root"]) == EX_CONFIG
    assert sendmail.main(["--bogus"]) == EX_USAGE
    assert "sendmail:" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_pigeon_config_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PIGEON_CONFIG", raising=False)
    yield
