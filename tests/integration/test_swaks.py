"""Debian's ``swaks`` against the real server: a plain send, several recipients, PIPELINING.

swaks 20201014 (Debian bookworm) has no CHUNKING/BDAT support, so BDAT is covered with a raw
socket in ``test_smtp_commands.py``.
"""

from __future__ import annotations

import subprocess
import time
import uuid

from tests.integration.harness import QUEUED_AS, Server


def run_swaks(swaks: str, srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([swaks, "--server", srv.host, "--port", str(srv.smtp_port), "--timeout", "20",
                          "--helo", "swaks.example", *args],
                         capture_output=True, text=True, timeout=60)
    return res


def wait_token(srv: Server, address: str, tok: str, timeout: float = 15.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in srv.messages(address) if tok.encode() in m]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_swaks_plain_send(shared: Server, swaks: str) -> None:
    tok = uuid.uuid4().hex
    res = run_swaks(swaks, shared, "--from", "swaks@remote.test", "--to", "alice@example.test",
                    "--header", f"Subject: swaks {tok}", "--body", f"plain body {tok}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "250 2.0.0 Ok: queued as" in res.stdout
    [msg] = wait_token(shared, "alice@example.test", tok)
    assert b"Return-Path: <swaks@remote.test>" in msg and b"with ESMTP" in msg


def test_swaks_several_recipients(shared: Server, swaks: str) -> None:
    tok = uuid.uuid4().hex
    res = run_swaks(swaks, shared, "--from", "swaks@remote.test",
                    "--to", "alice@example.test,bob@example.test,carol+x@example.test",
                    "--header", f"Subject: multi {tok}", "--body", "to three")
    assert res.returncode == 0, res.stdout + res.stderr
    m = QUEUED_AS.search(res.stdout)
    assert m is not None
    for user in ("alice", "bob", "carol"):
        assert len(wait_token(shared, f"{user}@example.test", tok)) == 1, user
    shared.wait_log(rf"{m.group(1)} received .* nrcpt=3 ")


def test_swaks_pipelining_with_a_refused_recipient(shared: Server, swaks: str) -> None:
    tok = uuid.uuid4().hex
    res = run_swaks(swaks, shared, "--pipeline", "--from", "swaks@remote.test",
                    "--to", "bob@example.test,nobody@example.test",
                    "--header", f"Subject: pipelined {tok}", "--body", "pipelined")
    # swaks exits non-zero when one recipient is refused, but the message goes to the others.
    assert "PIPELINING" in res.stdout
    assert "550 5.1.1" in res.stdout, res.stdout
    assert "queued as" in res.stdout, res.stdout
    assert len(wait_token(shared, "bob@example.test", tok)) == 1
    tok2 = uuid.uuid4().hex
    res = run_swaks(swaks, shared, "--pipeline", "--from", "swaks@remote.test", "--to", "bob@example.test",
                    "--header", f"Subject: pipelined {tok2}", "--body", "pipelined")
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(wait_token(shared, "bob@example.test", tok2)) == 1


def test_swaks_helo_only_client(shared: Server, swaks: str) -> None:
    tok = uuid.uuid4().hex
    res = run_swaks(swaks, shared, "--protocol", "SMTP", "--from", "old@remote.test", "--to", "carol@example.test",
                    "--header", f"Subject: helo {tok}", "--body", "old style")
    assert res.returncode == 0, res.stdout + res.stderr
    [msg] = wait_token(shared, "carol@example.test", tok)
    assert b"with SMTP" in msg
