"""Local delivery through the real server: the envelope decides, trace headers, recipient policy.

Issue 2, "Local delivery" and "SMTP server" recipient checks: Bcc recipients get the message and
appear in no header; one copy per recipient; ``Return-Path:``/``Delivered-To:``/``Received:``;
550 5.1.1 for unknown users, 554 5.7.1 for other domains; ``postmaster`` always; plus-addressing;
aliases (one → many, nested, remote, catch-all), forwards, ``aliases import``; directory changes
made with the command line while the server runs apply at once; the Received: loop limit.
"""

from __future__ import annotations

import smtplib
import time
import uuid
from pathlib import Path

from tests.integration.conftest import MakeServer
from tests.integration.harness import RawClient, Server


def token() -> str:
    return uuid.uuid4().hex


def send(srv: Server, rcpts: list[str], subject: str, sender: str = "sender@remote.test",
         headers: str = "") -> dict[str, tuple[int, bytes]]:
    msg = (f"From: {sender}\r\nTo: alice@example.test\r\n{headers}Subject: {subject}\r\n"
           f"Message-ID: <{subject}@remote.test>\r\n\r\nbody of {subject}\r\n")
    with smtplib.SMTP(srv.host, srv.smtp_port, timeout=15) as c:
        return c.sendmail(sender, rcpts, msg.encode())


def copies(srv: Server, address: str, needle: str, count: int = 1, timeout: float = 15.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in srv.messages(address) if needle.encode() in m]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def header_section(msg: bytes) -> str:
    return msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")


def rcpt_reply(srv: Server, rcpt: str) -> tuple[int, str]:
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<probe@remote.test>")[0] == 250
        code, lines = c.cmd(f"RCPT TO:{rcpt}")
        c.cmd("QUIT")
    return code, lines[0]


def test_bcc_recipient_gets_the_message_and_appears_in_no_header(shared: Server) -> None:
    t = token()
    send(shared, ["alice@example.test", "bob@example.test", "carol@example.test"], t,
         headers="Cc: bob@example.test\r\n")
    copies_by = {u: copies(shared, f"{u}@example.test", t) for u in ("alice", "bob", "carol")}
    for user, found in copies_by.items():
        assert len(found) == 1, f"{user} got {len(found)} copies"  # one copy per recipient
    for user, [msg] in copies_by.items():
        headers = header_section(msg)
        lines = [h for h in headers.split("\n") if "carol" in h.lower()]
        if user == "carol":
            # Only carol's own Delivered-To (added at final delivery) may name her.
            assert [h for h in lines if not h.startswith("Delivered-To: carol@example.test")] == []
        else:
            assert lines == [], f"Bcc address leaked into {user}'s copy: {lines}"


def test_trace_headers_on_each_copy(shared: Server) -> None:
    t = token()
    send(shared, ["alice@example.test", "bob@example.test"], t, sender="trace@remote.test")
    for user in ("alice", "bob"):
        [msg] = copies(shared, f"{user}@example.test", t)
        lines = header_section(msg).split("\n")
        assert lines[0] == "Return-Path: <trace@remote.test>"  # RFC 5321 §4.4
        assert lines[1] == f"Delivered-To: {user}@example.test"
        assert lines[2].startswith("Received: from ")
        received = " ".join(line.strip() for line in lines[2:6])
        assert "by mx.example.test" in received and "with ESMTP" in received


def test_null_sender_return_path(shared: Server) -> None:
    t = token()
    with smtplib.SMTP(shared.host, shared.smtp_port, timeout=15) as c:
        c.sendmail("<>", ["alice@example.test"], f"Subject: {t}\r\n\r\nbounce-ish\r\n".encode())
    [msg] = copies(shared, "alice@example.test", t)
    assert msg.startswith(b"Return-Path: <>")


def test_recipient_policy(shared: Server) -> None:
    code, text = rcpt_reply(shared, "<nobody@example.test>")
    assert (code, text[:5]) == (550, "5.1.1")
    code, text = rcpt_reply(shared, "<alice@elsewhere.test>")
    assert (code, text[:5]) == (554, "5.7.1")  # no open relay
    code, text = rcpt_reply(shared, "<alice@mx.example.test>")  # the host name is not a mail domain
    assert (code, text[:5]) == (554, "5.7.1")
    shared.wait_log(r"NOQUEUE reject client=127\.0\.0\.1 stage=RCPT from=<probe@remote\.test> "
                    r"to=<nobody@example\.test> .*status=\"550 5\.1\.1")


def test_postmaster_in_any_case_and_bare_is_accepted_and_delivered(shared: Server) -> None:
    t = token()
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<someone@remote.test>")[0] == 250
        for rcpt in ("<postmaster@example.test>", "<PostMaster@Example.TEST>", "<POSTMASTER>", "<postmaster>"):
            code, lines = c.cmd(f"RCPT TO:{rcpt}")
            assert code == 250, (rcpt, lines)  # RFC 5321 §4.5.1
        assert c.data(f"Subject: {t}\r\n\r\nto the postmaster\r\n".encode())[0] == 250
    # The default postmaster is the first user created: alice; one copy despite four RCPTs.
    assert len(copies(shared, "alice@example.test", t)) == 1
    time.sleep(0.2)
    assert len(copies(shared, "alice@example.test", t, timeout=0)) == 1


def test_plus_addressing(shared: Server) -> None:
    t = token()
    send(shared, ["bob+lists@example.test", "Bob+Other-Tag@EXAMPLE.test"], t)
    [msg] = copies(shared, "bob@example.test", t)
    assert b"Delivered-To: bob" in msg
    assert rcpt_reply(shared, "<nobody+tag@example.test>")[0] == 550


def test_aliases_one_to_many_nested_and_live_changes(shared: Server) -> None:
    t = token()
    assert rcpt_reply(shared, "<team@example.test>")[0] == 550
    shared.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    shared.cli("alias", "add", "everyone@example.test", "team@example.test", "carol@example.test")
    # Taken into account by the running server without a restart.
    assert rcpt_reply(shared, "<team@example.test>")[0] == 250
    send(shared, ["everyone@example.test", "team@example.test"], t)
    for user in ("alice", "bob", "carol"):
        assert len(copies(shared, f"{user}@example.test", t)) == 1, user
    time.sleep(0.2)
    for user in ("alice", "bob"):  # deduplicated: once even though reached twice
        assert len(copies(shared, f"{user}@example.test", t, timeout=0)) == 1
    shared.cli("alias", "remove", "everyone@example.test")
    assert rcpt_reply(shared, "<everyone@example.test>")[0] == 550


def test_alias_loop_does_not_lose_the_other_targets(shared: Server) -> None:
    t = token()
    shared.cli("alias", "add", "loop1@example.test", "loop2@example.test", "bob@example.test")
    shared.cli("alias", "add", "loop2@example.test", "loop1@example.test")
    send(shared, ["loop1@example.test"], t)
    assert len(copies(shared, "bob@example.test", t)) == 1


def test_users_added_and_removed_while_running(shared: Server) -> None:
    t = token()
    assert rcpt_reply(shared, "<dave@example.test>")[0] == 550
    shared.add_user("dave@example.test")
    assert rcpt_reply(shared, "<dave@example.test>")[0] == 250
    send(shared, ["dave@example.test"], t)
    assert len(copies(shared, "dave@example.test", t)) == 1
    shared.cli("user", "remove", "dave@example.test")
    assert rcpt_reply(shared, "<dave@example.test>")[0] == 550


def test_domain_added_at_run_time_with_catch_all(shared: Server) -> None:
    t = token()
    assert rcpt_reply(shared, "<anyone@other.test>")[0] == 554
    shared.cli("domain", "add", "other.test")
    shared.add_user("erin@other.test")
    assert rcpt_reply(shared, "<anyone@other.test>")[0] == 550
    shared.cli("alias", "add", "@other.test", "erin@other.test")
    assert rcpt_reply(shared, "<anyone@other.test>")[0] == 250
    send(shared, ["anyone@other.test", "x.y@other.test"], t)
    assert len(copies(shared, "erin@other.test", t)) == 1
    # postmaster of the new domain exists too (RFC 5321 §4.5.1).
    assert rcpt_reply(shared, "<postmaster@other.test>")[0] == 250
    # The catch-all does not swallow the first domain.
    assert rcpt_reply(shared, "<anyone@example.test>")[0] == 550


def test_user_forward_with_and_without_keep(shared: Server) -> None:
    shared.add_user("fwd1@example.test")
    shared.add_user("fwd2@example.test")
    shared.add_user("target@example.test")
    shared.cli("user", "forward", "fwd1@example.test", "target@example.test")
    shared.cli("user", "forward", "fwd2@example.test", "target@example.test", "--keep")
    t1, t2 = token(), token()
    send(shared, ["fwd1@example.test"], t1)
    send(shared, ["fwd2@example.test"], t2)
    assert len(copies(shared, "target@example.test", t1)) == 1
    assert len(copies(shared, "target@example.test", t2)) == 1
    assert len(copies(shared, "fwd2@example.test", t2)) == 1  # --keep
    time.sleep(0.2)
    assert copies(shared, "fwd1@example.test", t1, timeout=0) == []  # forwarded, not kept
    # Clearing the forward brings the mail back.
    shared.cli("user", "forward", "fwd1@example.test")
    t3 = token()
    send(shared, ["fwd1@example.test"], t3)
    assert len(copies(shared, "fwd1@example.test", t3)) == 1


def test_aliases_import_file(shared: Server, tmp_path: Path) -> None:
    f = tmp_path / "aliases"
    f.write_text(
        "# staff aliases\n"
        "sales: alice,\n"
        "   bob@example.test\n"
        "\n"
        "support@example.test: carol@example.test\n"
    )
    res = shared.cli("aliases", "import", str(f))
    # A bare name applies to every local domain (other tests may have added one at run time).
    n_domains = len(shared.cli("domain", "list").stdout.splitlines())
    assert f"imported {n_domains + 1} alias(es)" in res.stdout, res.stdout
    listing = shared.cli("alias", "list").stdout
    assert "sales@example.test: alice@example.test, bob@example.test" in listing, listing
    t = token()
    send(shared, ["sales@example.test", "support@example.test"], t)
    for user in ("alice", "bob", "carol"):
        assert len(copies(shared, f"{user}@example.test", t)) == 1, user
    for bad in (":include:/etc/other", "|/bin/sh -c evil", "/tmp/file"):
        f.write_text(f"bad: {bad}\n")
        res = shared.cli("aliases", "import", str(f), check=False)
        assert res.returncode == 1
        assert str(f) in res.stderr and ":1:" in res.stderr, res.stderr
    assert rcpt_reply(shared, "<bad@example.test>")[0] == 550  # all or nothing


def test_alias_to_a_remote_address_stays_deferred(make_server: MakeServer) -> None:
    srv = make_server()
    srv.add_user("alice@example.test")
    srv.start()
    srv.cli("alias", "add", "ext@example.test", "someone@remote.test", "alice@example.test")
    t = token()
    send(srv, ["ext@example.test"], t, sender="orig@sender.test")
    assert len(copies(srv, "alice@example.test", t)) == 1
    q = srv.wait_queue(lambda q: bool(q) and any(r["status"] == "deferred" for r in q[0]["recipients"]))
    [entry] = q
    assert entry["sender"] == "<orig@sender.test>"  # the original envelope sender is kept
    rcpts = {r["address"]: r["status"] for r in entry["recipients"]}
    assert rcpts["someone@remote.test"] == "deferred"
    assert "someone@remote.test" in srv.cli("queue", "list").stdout
    # Never lost: still there after a restart.
    srv.stop()
    srv.start()
    assert [e["id"] for e in srv.queue_list()] == [entry["id"]]


def test_received_loop_is_refused_and_nothing_queued(shared: Server) -> None:
    t = token()
    hops = "".join(f"Received: from hop{i}.test by hop{i + 1}.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
                   for i in range(101))
    before = shared.count_events("received")
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<loop@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
        code, lines = c.data(f"{hops}Subject: {t}\r\n\r\nlooping\r\n".encode())
        assert (code, lines[0][:5]) == (554, "5.4.6"), (code, lines)  # RFC 5321 §6.3
        # 50 hops is not a loop.
        assert c.cmd("MAIL FROM:<loop@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
        fifty = "".join(hops.splitlines(keepends=True)[:50])
        assert c.data(f"{fifty}Subject: {t}-ok\r\n\r\nfine\r\n".encode())[0] == 250
    assert len(copies(shared, "bob@example.test", t + "-ok")) == 1
    assert [m for m in shared.messages("bob@example.test") if f"Subject: {t}\n".encode() in m.replace(b"\r\n", b"\n")] == []
    assert shared.count_events("received") == before + 1
