"""``pigeon queue`` against the running server (control socket) and offline (server stopped).

Issue 2, "The queue": list / show / hold / release / delete / flush, both ways. The queue content
is mail to an alias whose target is remote: until relaying lands it stays ``deferred``, never
lost. Also: the DSN parameters (RFC 3461 RET, ENVID, NOTIFY, ORCPT) are accepted and kept with
the envelope, and ``queue show`` displays them.
"""

from __future__ import annotations

import time

import re

import pytest

from tests.integration.conftest import MakeServer
from tests.integration.harness import RawClient, Server, queued_id


def remote_server(make_server: MakeServer) -> Server:
    srv = make_server()
    srv.add_user("alice@example.test")
    srv.cli("alias", "add", "ext@example.test", "someone@remote.test")
    srv.cli("alias", "add", "ext2@example.test", "other@remote.test")
    srv.start()
    return srv


def send_dsn(srv: Server, rcpt: str = "ext@example.test", envid: str = "ENV-42") -> str:
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd(f"MAIL FROM:<orig@sender.test> RET=HDRS ENVID={envid}")[0] == 250
        code, lines = c.cmd(f"RCPT TO:<{rcpt}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;first+2Bpart@example.test")
        assert code == 250, lines
        code, lines = c.data(b"Subject: queued\r\nX-Test: dsn\r\n\r\nkept for relay\r\n")
        assert code == 250, lines
        c.cmd("QUIT")
    return queued_id(lines)


def states(srv: Server) -> dict[str, str]:
    return {str(e["id"]): str(e["state"]) for e in srv.queue_list()}


def wait_state(srv: Server, qid: str, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while states(srv).get(qid) != state:
        if time.monotonic() > deadline:
            raise AssertionError(f"{qid} never reached {state}: {states(srv)}")
        time.sleep(0.1)


def attempts(srv: Server, qid: str) -> int:
    hist = srv.queue_show(qid)["history"]
    assert isinstance(hist, dict)
    return sum(len(v) for v in hist.values())


def test_dsn_parameters_are_kept_and_shown(make_server: MakeServer) -> None:
    srv = remote_server(make_server)
    qid = send_dsn(srv)
    wait_state(srv, qid, "deferred")
    shown = srv.queue_show(qid)
    env = shown["envelope"]
    assert isinstance(env, dict)
    assert env["ret"] == "HDRS" and env["envid"] == "ENV-42"
    [r] = env["recipients"]
    assert r["notify"] == ["SUCCESS", "FAILURE"]
    assert r["orcpt"] is not None and "first" in r["orcpt"]
    text = srv.cli("queue", "show", qid).stdout
    assert "HDRS" in text and "ENV-42" in text
    assert "SUCCESS" in text and "FAILURE" in text, text  # NOTIFY shown to the operator
    assert "rfc822;first" in text.replace(" ", ""), text  # ORCPT shown to the operator
    assert "X-Test: dsn" in text and "someone@remote.test" in text


def test_queue_commands_against_the_running_server(make_server: MakeServer) -> None:
    srv = remote_server(make_server)
    a = send_dsn(srv)
    b = send_dsn(srv, "ext2@example.test", "ENV-B")
    wait_state(srv, a, "deferred")
    wait_state(srv, b, "deferred")
    listing = srv.cli("queue", "list").stdout
    assert a in listing and b in listing and "someone@remote.test (deferred)" in listing
    # The last reply of a deferred recipient is shown: here the test DNS server's SERVFAIL, a
    # temporary routing failure (RFC 3463 X.4.x).
    assert re.search(r"\b4\.4\.\d\b", listing) and "SERVFAIL" in listing

    assert srv.cli("queue", "hold", a).stdout.strip() == f"{a}: put on hold"
    assert states(srv) == {a: "hold", b: "deferred"}
    res = srv.cli("queue", "release", b, check=False)  # not on hold
    assert res.returncode == 1 and "not on hold" in res.stderr

    assert "1 deferred message" in srv.cli("queue", "flush").stdout  # b only: a is held
    assert states(srv)[a] == "hold"

    srv.cli("queue", "release", a)
    wait_state(srv, a, "deferred")  # released: tried again at once, deferred again
    srv.cli("queue", "delete", a)
    assert states(srv) == {b: "deferred"}
    res = srv.cli("queue", "show", a, check=False)
    assert res.returncode == 1
    res = srv.cli("queue", "show", "not-an-id", check=False)
    assert res.returncode == 1 and "pigeon:" in res.stderr
    for action in ("hold", "release", "delete"):  # admin actions reach the operator's log
        srv.wait_log(rf"{a} admin action={action}")


def test_queue_commands_offline(make_server: MakeServer) -> None:
    srv = remote_server(make_server)
    a = send_dsn(srv)
    b = send_dsn(srv, "ext2@example.test", "ENV-B")
    c = send_dsn(srv, "ext@example.test", "ENV-C")
    for qid in (a, b, c):
        wait_state(srv, qid, "deferred")
    assert srv.stop() == 0
    assert not (srv.data_dir / "control.sock").exists() or srv.proc is None

    assert states(srv) == {a: "deferred", b: "deferred", c: "deferred"}
    assert "ENV-B" in srv.cli("queue", "show", b).stdout
    srv.cli("queue", "hold", a)
    srv.cli("queue", "delete", c)
    assert states(srv) == {a: "hold", b: "deferred"}
    out = srv.cli("queue", "flush").stdout
    assert out.startswith("1 ")  # one deferred message (b) scheduled
    srv.cli("queue", "release", a)
    srv.cli("queue", "hold", b)
    assert states(srv)[b] == "hold"

    # The server picks up what was done offline.
    srv.start()
    wait_state(srv, a, "deferred")
    assert states(srv) == {a: "deferred", b: "hold"}
    srv.cli("queue", "delete", a)
    srv.cli("queue", "delete", b)
    assert srv.cli("queue", "list").stdout.strip() == "Mail queue is empty"


def test_queue_flush_retries_deferred_mail_now(make_server: MakeServer) -> None:
    srv = remote_server(make_server)
    qid = send_dsn(srv)
    wait_state(srv, qid, "deferred")
    assert attempts(srv, qid) == 1  # the next try is minutes away (retry_schedule)
    assert srv.cli("queue", "flush").stdout.startswith("1 ")
    deadline = time.monotonic() + 5
    while attempts(srv, qid) == 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert attempts(srv, qid) == 2, "queue flush did not retry the deferred message"
    wait_state(srv, qid, "deferred")


def test_unreadable_record_is_moved_aside_and_reported(make_server: MakeServer) -> None:
    srv = remote_server(make_server)
    good = send_dsn(srv)
    bad = send_dsn(srv, "ext2@example.test", "ENV-BAD")
    wait_state(srv, good, "deferred")
    wait_state(srv, bad, "deferred")
    assert srv.stop() == 0
    queue_dir = srv.data_dir / "queue"
    [record] = [p for p in (queue_dir / "deferred").rglob(f"{bad}*") if p.is_file()]
    record.write_bytes(b"\x00 not a queue record {{{")
    srv.start()
    assert states(srv) == {good: "deferred"}  # the server started; the good message is kept
    moved = [p for p in (queue_dir / "corrupt").rglob("*") if p.is_file() and bad in p.name]
    assert moved, "the unreadable record was not moved to corrupt/"
    assert bad in srv.log and "corrupt" in srv.log


def test_local_delivery_failure_is_deferred_and_retried(make_server: MakeServer) -> None:
    srv = make_server(extra_toml='[queue]\nretry_schedule = ["1s"]')
    srv.add_user("alice@example.test")
    srv.add_user("bob@example.test")
    srv.start()
    blocker = srv.maildir("alice@example.test")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a Maildir")  # alice's mailbox cannot be created
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<a@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
        code, lines = c.data(b"Subject: retry me\r\n\r\nbody\r\n")
        assert code == 250
        qid = queued_id(lines)
    srv.wait_log(rf"{qid} deferred to=<alice@example\.test> relay=local .*status=\"4")
    assert len(srv.wait_messages("bob@example.test", 1)) == 1  # the other recipient is not held up
    [entry] = srv.queue_list()
    assert {r["address"]: r["status"] for r in entry["recipients"]}["alice@example.test"] == "deferred"
    blocker.unlink()
    assert len(srv.wait_messages("alice@example.test", 1)) == 1  # retried, not lost
    assert srv.wait_queue(lambda q: q == []) == []
    assert len(srv.messages("bob@example.test")) == 1  # bob's copy is not repeated


def test_queue_bounce_fails_the_message_now_with_a_dsn(make_server: MakeServer) -> None:
    srv = make_server()
    srv.add_user("alice@example.test")
    srv.cli("alias", "add", "ext@example.test", "someone@remote.test")
    srv.start()
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<alice@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<ext@example.test>")[0] == 250
        code, lines = c.data(b"Subject: cancel me\r\n\r\nnever mind\r\n")
        assert code == 250
    qid = queued_id(lines)
    wait_state(srv, qid, "deferred")  # the test DNS answers SERVFAIL: a temporary failure
    out = srv.cli("queue", "bounce", qid).stdout
    assert out.startswith(f"{qid}: 1 recipient(s) failed")
    got = srv.wait_messages("alice@example.test", 1)
    assert len(got) == 1
    text = got[0].decode(errors="replace")
    assert "5.0.0" in text and "someone@remote.test" in text and "cancel me" in text
    assert qid not in states(srv)
    bad = srv.cli("queue", "bounce", qid, check=False)
    assert bad.returncode == 1 and "pigeon:" in bad.stderr
