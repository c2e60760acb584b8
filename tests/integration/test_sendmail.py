"""`pigeon sendmail` and the `sendmail` entry point against the real server (and without it)."""

from __future__ import annotations

import email
import email.policy
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import MakeServer
from tests.integration.harness import PIGEON, Server

pytestmark = pytest.mark.integration

SENDMAIL = Path(PIGEON[0]).parent / "sendmail"  # the console script beside python in the venv


def sendmail(srv: Server, *args: str, message: bytes, entry: list[str] | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = entry if entry is not None else [*PIGEON, "--config", str(srv.config_path), "sendmail"]
    return subprocess.run([*cmd, *args], input=message, capture_output=True, env=srv.env(), timeout=60)


def users(make_server: MakeServer) -> Server:
    srv = make_server()
    for u in ("alice", "bob", "carol", "dave"):
        srv.add_user(f"{u}@example.test")
    return srv


def test_dash_t_takes_recipients_from_headers_and_removes_bcc(make_server: MakeServer) -> None:
    srv = users(make_server)
    srv.start()
    msg = (b"From: alice@example.test\nTo: bob@example.test\nCc: Carol <carol@example.test>\n"
           b"Bcc: dave@example.test\nSubject: cron output\n\nall good\n.\nstill body\n")
    res = sendmail(srv, "-t", "-i", message=msg)
    assert res.returncode == 0, res.stderr
    for u in ("bob", "carol", "dave"):
        got = srv.wait_messages(f"{u}@example.test", 1)
        assert len(got) == 1, u
        m = email.message_from_bytes(got[0], policy=email.policy.default)
        assert m["Bcc"] is None  # the blind copy's address is not shown to anyone
        assert m["Message-ID"] and m["Date"]  # fix-ups as for submission (RFC 6409 §8)
        assert b"all good\n.\nstill body" in got[0]  # -i: a lone dot is not the end
    assert srv.messages("alice@example.test") == []


def test_sendmail_entry_point_and_exit_codes(make_server: MakeServer) -> None:
    srv = users(make_server)
    srv.start()
    entry = [str(SENDMAIL), "-C", str(srv.config_path)]
    res = sendmail(srv, "-f", "alice@example.test", "bob@example.test", message=b"Subject: hi\n\nx\n", entry=entry)
    assert res.returncode == 0, res.stderr
    assert len(srv.wait_messages("bob@example.test", 1)) == 1
    bad = sendmail(srv, "bob@@x", message=b"Subject: x\n\nx\n", entry=entry)
    assert bad.returncode == 67, bad.stderr  # EX_NOUSER (sysexits.h), as sendmail answers
    assert b"sendmail: bad recipient address 'bob@@x'" in bad.stderr
    none = sendmail(srv, message=b"Subject: x\n\nx\n", entry=entry)
    assert none.returncode == 64  # EX_USAGE: no recipients


def test_sendmail_while_the_server_is_stopped_is_delivered_after_it_starts(make_server: MakeServer) -> None:
    srv = users(make_server)
    res = sendmail(srv, "-f", "alice@example.test", "bob@example.test",
                   message=b"Subject: queued offline\n\nwaiting\n")
    assert res.returncode == 0, res.stderr
    listing = srv.cli("mailq").stdout
    assert "bob@example.test" in listing
    srv.start()
    got = srv.wait_messages("bob@example.test", 1)
    assert len(got) == 1 and b"queued offline" in got[0]
