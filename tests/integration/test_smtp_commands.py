"""The SMTP dialogue of the real server, byte by byte: extensions, replies, limits on lines and size.

Issue 2, "SMTP server": EHLO/HELO, VRFY 252, HELP, NOOP, RSET, every reply with an enhanced
status code (RFC 2034), 512-octet command lines (RFC 5321 §4.5.3.1.4), long DATA lines up to the
hard limit, SIZE (RFC 1870), PIPELINING (RFC 2920), CHUNKING/BDAT (RFC 3030), 8BITMIME and
SMTPUTF8 (RFC 6531), too many errors → 421.
"""

from __future__ import annotations

import re
import smtplib
import uuid

import pytest

from tests.integration.conftest import MakeServer
from tests.integration.harness import RawClient, Server, queued_id

ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}( |$)")


def token() -> str:
    return uuid.uuid4().hex


def received_count(srv: Server) -> int:
    return srv.count_events("received")


def message(subject: str, body: bytes = b"hello\r\n", extra: bytes = b"") -> bytes:
    return (b"From: sender@remote.test\r\nTo: alice@example.test\r\nSubject: " + subject.encode()
            + b"\r\n" + extra + b"\r\n" + body)


def find(srv: Server, address: str, needle: str | bytes, count: int = 1, timeout: float = 15.0) -> list[bytes]:
    """Wait for ``count`` copies in ``address``'s Maildir containing ``needle``; return them."""
    import time

    n = needle.encode() if isinstance(needle, str) else needle
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in srv.messages(address) if n in m]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_ehlo_lists_the_extensions(shared: Server) -> None:
    with smtplib.SMTP(shared.host, shared.smtp_port, timeout=15) as c:
        code, _ = c.ehlo("client.example")
        assert code == 250
        for ext in ("size", "pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking", "dsn"):
            assert c.has_extn(ext), ext
        assert c.esmtp_features["size"] == str(50 * 1024 * 1024)  # the default limit is announced


def test_every_reply_after_ehlo_carries_an_enhanced_code(shared: Server) -> None:
    t = token()
    commands: list[bytes] = [
        b"NOOP", b"RSET", b"VRFY alice", b"HELP", b"BOGUS", b"RCPT TO:<alice@example.test>",
        b"MAIL FROM:<>", b"MAIL FROM:<x@remote.test>", b"RCPT TO:<alice@example.test>",
        b"RCPT TO:<nobody@example.test>", b"RCPT TO:<x@elsewhere.test>", b"RCPT TO:<bad address>",
        b"EXPN staff", b"STARTTLS",
    ]
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        replies = [c.cmd(line) for line in commands]
        replies.append(c.data(message(t)))
        replies.append(c.cmd("QUIT"))
    codes = [code for code, _ in replies]
    # NOOP RSET VRFY HELP BOGUS, RCPT before MAIL, MAIL <>, nested MAIL, RCPT ok / unknown /
    # relay / bad syntax, EXPN, STARTTLS (not on port 25 yet), DATA, QUIT.
    assert codes[:6] == [250, 250, 252, 214, 500, 503]
    assert codes[6:8] == [250, 503]
    assert codes[8:11] == [250, 550, 554]
    assert 500 <= codes[11] < 600 and codes[12] == 502 and 500 <= codes[13] < 600
    assert codes[-2:] == [250, 221]
    for code, lines in replies:
        for line in lines:
            assert ENHANCED.match(line), f"{code} {line!r} has no enhanced status code"


def test_helo_then_a_plain_smtp_transaction(shared: Server) -> None:
    t = token()
    with RawClient(shared.host, shared.smtp_port) as c:
        assert c.reply()[0] == 220
        code, lines = c.cmd("HELO oldclient.example")
        assert code == 250 and "mx.example.test" in lines[0]
        assert c.cmd("MAIL FROM:<old@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
        code, lines = c.data(message(t))
        assert code == 250, lines
        assert c.cmd("QUIT")[0] == 221
    [msg] = find(shared, "bob@example.test", t)
    assert re.search(rb"^Received: from oldclient\.example .*?with SMTP", msg, re.MULTILINE | re.DOTALL)


def test_vrfy_help_noop_rset(shared: Server) -> None:
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        code, lines = c.cmd("VRFY alice@example.test")
        assert code == 252 and lines[0].startswith("2.")
        assert c.cmd("HELP")[0] == 214
        assert c.cmd("HELP MAIL")[0] == 214
        assert c.cmd("NOOP")[0] == 250
        assert c.cmd("MAIL FROM:<x@remote.test>")[0] == 250
        assert c.cmd("RSET") == (250, ["2.0.0 Reset state"])
        # RSET ended the transaction: RCPT is out of sequence now (RFC 5321 §4.1.1.5).
        code, lines = c.cmd("RCPT TO:<alice@example.test>")
        assert code == 503 and lines[0].startswith("5.5.1")
        assert c.cmd("QUIT")[0] == 221


def test_command_line_over_512_octets_is_refused(shared: Server) -> None:
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        code, lines = c.cmd("NOOP " + "x" * 600)  # RFC 5321 §4.5.3.1.4: 512 with CRLF
        assert code == 500 and lines[0].startswith("5.5.2"), lines
        assert c.cmd("NOOP " + "x" * 500)[0] == 250  # 507 octets with CRLF: fine
        assert c.cmd("NOOP")[0] == 250  # the session goes on
        assert c.cmd("QUIT")[0] == 221


def test_data_line_longer_than_1000_is_delivered_intact(shared: Server) -> None:
    t = token()
    long_line = ("L" + t) * 200  # 6,600 octets: over RFC 5321's 1000, under the 64 KiB hard limit
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<x@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<carol@example.test>")[0] == 250
        code, lines = c.data(message(t, long_line.encode() + b"\r\nend\r\n"))
        assert code == 250, lines
    [msg] = find(shared, "carol@example.test", t)
    assert ("\n" + long_line + "\n").encode() in msg.replace(b"\r\n", b"\n")


def test_data_line_over_the_hard_limit_is_refused_and_nothing_queued(make_server: MakeServer) -> None:
    srv = make_server(limits_toml="max_line_length = 2000")
    srv.add_user("alice@example.test")
    srv.start()
    t = token()
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<x@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        body = b"short\r\n" + b"y" * 5000 + b"\r\nafter the long line\r\n"
        code, lines = c.data(message(t, body))
        assert 500 <= code < 600 and lines[0].startswith("5."), (code, lines)
        assert c.cmd("NOOP")[0] == 250  # the rest of the message was not read as commands
        # A line just under the limit is fine.
        assert c.cmd("MAIL FROM:<x@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.data(message(t + "-ok", b"z" * 1900 + b"\r\n"))[0] == 250
    assert len(find(srv, "alice@example.test", t + "-ok")) == 1
    assert [m for m in srv.messages("alice@example.test") if b"after the long line" in m] == []
    assert received_count(srv) == 1
    assert srv.queue_list() == []
    srv.wait_log(r"NOQUEUE reject .*stage=DATA .*status=\"55\d 5\.")


def test_size_limit_at_mail_and_while_receiving(make_server: MakeServer) -> None:
    srv = make_server(limits_toml="max_message_size = 10000")
    srv.add_user("alice@example.test")
    srv.start()
    t = token()
    with RawClient(srv.host, srv.smtp_port) as c:
        lines = c.greet()
        assert "SIZE 10000" in lines
        # RFC 1870 §6: a declared size over the limit is refused at MAIL.
        code, rl = c.cmd("MAIL FROM:<x@remote.test> SIZE=20000")
        assert (code, rl[0][:5]) == (552, "5.3.4")
        assert c.cmd("MAIL FROM:<x@remote.test> SIZE=5000")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        big = (b"0123456789" * 10 + b"\r\n") * 200  # 20,400 octets, more than declared and allowed
        code, rl = c.data(message(t, big))
        assert (code, rl[0][:5]) == (552, "5.3.4")
        # BDAT over the limit too.
        assert c.cmd("MAIL FROM:<x@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        payload = message(t + "-bdat", big)
        c.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
        code, rl = c.reply()
        assert (code, rl[0][:5]) == (552, "5.3.4")
        assert c.cmd("NOOP")[0] == 250
        # Under the limit: accepted.
        assert c.cmd("MAIL FROM:<x@remote.test> SIZE=500")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.data(message(t + "-small"))[0] == 250
    assert len(find(srv, "alice@example.test", t + "-small")) == 1
    assert len(srv.messages("alice@example.test")) == 1
    assert received_count(srv) == 1
    assert srv.queue_list() == []


def test_pipelining_a_whole_transaction_in_one_write(shared: Server) -> None:
    t = token()
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        c.send(b"MAIL FROM:<pipe@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
               b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
               + message(t, b"..a line starting with a dot\r\nbye\r\n") + b".\r\nQUIT\r\n")
        codes = [r[0] for r in c.replies(7)]
        assert codes == [250, 250, 550, 250, 354, 250, 221]
        assert c.closed()
    for who in ("alice@example.test", "bob@example.test"):
        [msg] = find(shared, who, t)
        assert b"\n.a line starting with a dot\n" in msg.replace(b"\r\n", b"\n")  # RFC 5321 §4.5.2


def test_bdat_chunks_in_separate_commands_and_pipelined(shared: Server) -> None:
    t = token()
    msg = message(t, b".this dot stays (BDAT does no unstuffing)\r\n\x00binary-ish\xff\r\n")
    a, b = msg[:40], msg[40:]
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        # 1. Two chunks, LAST on the second.
        assert c.cmd("MAIL FROM:<chunk@remote.test> BODY=8BITMIME")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        c.send(b"BDAT %d\r\n" % len(a) + a)
        assert c.reply()[0] == 250
        c.send(b"BDAT %d LAST\r\n" % len(b) + b)
        code, lines = c.reply()
        assert code == 250
        qid1 = queued_id(lines)
        # 2. Chunks then an empty "BDAT 0 LAST", everything in one write.
        assert c.cmd("MAIL FROM:<chunk@remote.test> BODY=8BITMIME")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
        c.send(b"BDAT %d\r\n" % len(a) + a + b"BDAT %d\r\n" % len(b) + b + b"BDAT 0 LAST\r\n")
        codes = [r[0] for r in c.replies(3)]
        assert codes == [250, 250, 250]
        assert c.cmd("QUIT")[0] == 221
    for who in ("alice@example.test", "bob@example.test"):
        [got] = find(shared, who, t)
        body = got.split(b"\n\n", 1)[1] if b"\r\n\r\n" not in got else got.split(b"\r\n\r\n", 1)[1]
        assert body.replace(b"\r\n", b"\n") == msg.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    shared.wait_log(rf"{qid1} delivered to=<alice@example\.test>")


def test_8bit_body_and_smtputf8_addresses(shared: Server) -> None:
    t = token()
    body = "Grüße aus Köln — ünïcödé\r\n".encode() + b"latin-1 \xe9\xe8\r\n"
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        # Without SMTPUTF8, a UTF-8 address is refused (RFC 6531 §3.5).
        code, lines = c.cmd("MAIL FROM:<jörg@exämple.test>")
        assert code == 553 and lines[0].startswith("5.6.7"), (code, lines)
        assert c.cmd("MAIL FROM:<jörg@exämple.test> BODY=8BITMIME SMTPUTF8")[0] == 250
        assert c.cmd("RCPT TO:<carol@example.test>")[0] == 250
        code, lines = c.data(message(t, body, extra="X-Name: Jörg\r\n".encode()))
        assert code == 250, lines
    [msg] = find(shared, "carol@example.test", t)
    assert "Return-Path: <jörg@exämple.test>".encode() in msg
    assert body.replace(b"\r\n", b"\n") in msg.replace(b"\r\n", b"\n")
    assert "X-Name: Jörg".encode() in msg


def test_utf8_local_user_receives_mail(make_server: MakeServer) -> None:
    srv = make_server()
    srv.add_user("alice@example.test")
    srv.add_user("jörg@example.test")  # RFC 6531: a UTF-8 mailbox name is a valid local user
    srv.start()
    t = token()
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<alice@example.test> SMTPUTF8")[0] == 250
        assert c.cmd("RCPT TO:<jörg@example.test>")[0] == 250
        assert c.cmd("RCPT TO:<JÖRG+tag@example.test>")[0] == 250
        assert c.data(message(t))[0] == 250
    [msg] = find(srv, "jörg@example.test", t)
    assert "Delivered-To: jörg@example.test".encode() in msg


def test_too_many_errors_closes_with_421(shared: Server) -> None:
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        codes = []
        for i in range(25):
            code, lines = c.cmd(f"BOGUS{i}")
            codes.append(code)
            if code == 421:
                assert lines[0].startswith("4.7.0")
                break
        assert codes[-1] == 421, codes
        assert all(code == 500 for code in codes[:-1])
        assert len(codes) <= 21  # limits.max_errors defaults to 20
        assert c.closed()


# --- fatal errors: every reply already due is sent first (issue 14, point 5) ------------------


@pytest.mark.parametrize("fatal", [b"BDAT x LAST\r\n", b"GET / HTTP/1.1\r\n"])
def test_fatal_error_after_a_pipelined_message_sends_the_replies_already_due(
    shared: Server, fatal: bytes
) -> None:
    # A message committed before the fatal line must have its 250 on the wire: without it the
    # client retries, and the message is delivered twice.
    t = token()
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        c.send(b"MAIL FROM:<pipe@remote.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n"
               + message(t) + b".\r\n" + fatal + b"NOOP\r\n")
        replies = c.replies(5)
        assert [code for code, _ in replies] == [250, 250, 354, 250, 421], replies
        queued_id(replies[3][1])
        assert replies[4][1][0].startswith("4."), replies[4]  # RFC 2034: an enhanced code
        assert c.closed()
        assert c.buf == b""  # nothing after the 421: the pipelined NOOP was not read
    assert len(find(shared, "carol@example.test", t)) == 1


@pytest.mark.parametrize("last", [b"BOGUS\r\n", b"GET / HTTP/1.1\r\n", b"BDAT x LAST\r\n"])
def test_the_last_allowed_error_closes_with_421_and_no_traceback(
    make_server: MakeServer, last: bytes
) -> None:
    srv = make_server()
    srv.start()
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        c.send(b"BOGUS\r\n" * 19 + last)  # limits.max_errors defaults to 20
        # A 20th BOGUS is answered 500, then the session ends with 421 (as Postfix does); a
        # fatal 20th line gets its own 421 and no second one.
        expected = [500] * 20 + [421] if last == b"BOGUS\r\n" else [500] * 19 + [421]
        replies = c.replies(len(expected))
        assert [code for code, _ in replies] == expected, replies
        assert replies[-1][1][0].startswith("4.")
        assert c.closed()
        assert c.buf == b""  # one closing reply, not two
    srv.wait_log(r"NOQUEUE disconnect client=127\.0\.0\.1 service=smtp commands=21 errors=20")  # EHLO + 20
    srv.wait_log(r"WARNING pigeon\.smtpd\.session: too many errors client=127\.0\.0\.1 errors=20$")
    assert "Traceback" not in srv.log
    assert "session crashed" not in srv.log


def test_non_ascii_helo_is_not_copied_raw_into_received(shared: Server) -> None:
    # U+0085 (NEL) and U+2028 (LINE SEPARATOR) are line breaks to many Unicode-aware parsers.
    t = token()
    with RawClient(shared.host, shared.smtp_port) as c:
        assert c.reply()[0] == 220
        code, lines = c.cmd("EHLO evil\u0085Received:\u2028x.example\u00e9".encode())
        assert code == 250
        assert all(line.isascii() for line in lines), lines  # RFC 6531 §3.7.4: ASCII replies
        assert c.cmd("MAIL FROM:<x@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.test>")[0] == 250
        assert c.data(message(t))[0] == 250
    [msg] = find(shared, "bob@example.test", t)
    start = msg.index(b"Received: from evil")
    line = msg[start:msg.index(b"\n", start)]
    assert line.isascii(), line
    assert line.startswith(b"Received: from evil?Received:?x.example? ([127.0.0.1])"), line
