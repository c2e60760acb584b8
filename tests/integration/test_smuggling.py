"""SMTP smuggling (CVE-2023-51764 class): a second message hidden behind a fake end of data.

DATA ends only at ``<CRLF>.<CRLF>`` (RFC 5321 §4.1.1.4). A client that sends ``<LF>.<CR><LF>``
or another near-miss followed by ``MAIL``/``RCPT``/``DATA`` must never get that second message
accepted: with ``smtp.bare_newline = "reject"`` (the default) the whole message is refused, with
``"normalize"`` it is one message whose text includes the would-be commands. Either way the
smuggled recipient receives nothing, the server sends exactly one reply for the data, and the
operator's log shows no ``received`` line for the smuggled sender.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.integration.conftest import MakeServer
from tests.integration.harness import RawClient, Server

FAKE_ENDS = [
    b"\n.\r\n",  # <LF>.<CR><LF>: the Postfix/Sendmail CVE-2023-51764 sequence
    b"\n.\n",  # <LF>.<LF>
    b"\r.\r",  # <CR>.<CR>
    b"\r\n.\n",  # <CR><LF>.<LF>
    b"\r\n.\r",  # <CR><LF>.<CR>
    b"\n.\r",  # <LF>.<CR>
    b"\r.\r\n",  # <CR>.<CR><LF>
    b"\r.\n",  # <CR>.<LF>
    b"\r\n\x00.\r\n",  # a NUL before the dot
]


def smuggle(srv: Server, fake_end: bytes, tag: str) -> tuple[int, list[str]]:
    """Send one message with a smuggled second transaction inside; return the DATA answer."""
    outer = (b"From: a@remote.test\r\nTo: alice@example.test\r\nSubject: outer " + tag.encode()
             + b"\r\n\r\nfirst message")
    inner = (b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
             b"From: evil@remote.test\r\nTo: bob@example.test\r\nSubject: smuggled " + tag.encode()
             + b"\r\n\r\nsmuggled message")
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<a@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(outer + fake_end + inner + b"\r\n.\r\n")
        answer = c.reply()
        # Exactly one reply for the data: the next one answers our QUIT, not a smuggled command.
        code, lines = c.cmd("QUIT")
        assert code == 221, (code, lines)
    return answer


def check_not_smuggled(srv: Server, tag: str) -> None:
    time.sleep(0.3)  # let any (wrong) delivery happen before looking
    assert [m for m in srv.messages("bob@example.test") if tag.encode() in m] == []
    for line in srv.mail_events("received"):
        assert "evil@remote.test" not in line, line
    for m in srv.messages("alice@example.test"):
        if tag.encode() in m:  # accepted as one message (normalize): the commands are its text
            assert b"smuggled message" in m


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=[repr(f)[2:-1] for f in FAKE_ENDS])
def test_smuggled_message_is_never_accepted_default_policy(shared: Server, fake_end: bytes) -> None:
    tag = uuid.uuid4().hex
    code, lines = smuggle(shared, fake_end, tag)
    if b"\x00" in fake_end:
        assert code in (250, 550), (code, lines)  # no bare newline: either is acceptable
    else:
        # The default policy refuses bare CR/LF (RFC 5321 §2.3.8).
        assert (code, lines[0][:5]) == (550, "5.5.2"), (code, lines)
    check_not_smuggled(shared, tag)


def test_smuggled_message_is_never_accepted_normalize_policy(make_server: MakeServer) -> None:
    srv = make_server(extra_toml='[smtp]\nbare_newline = "normalize"')
    srv.add_user("alice@example.test")
    srv.add_user("bob@example.test")
    srv.start()
    tags = []
    for fake_end in FAKE_ENDS:
        tag = uuid.uuid4().hex
        tags.append(tag)
        code, lines = smuggle(srv, fake_end, tag)
        assert code == 250, (fake_end, code, lines)
    srv.wait_messages("alice@example.test", len(FAKE_ENDS))
    for tag in tags:
        check_not_smuggled(srv, tag)
        [outer] = [m for m in srv.messages("alice@example.test") if tag.encode() in m]
        assert b"smuggled message" in outer
    assert srv.messages("bob@example.test") == []


def bdat_message(srv: Server, chunks: list[bytes], rcpt: str) -> tuple[int, list[str]]:
    """One transaction sent as BDAT chunks (the last one with LAST); the answer to LAST."""
    with RawClient(srv.host, srv.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<a@remote.test>")[0] == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        for chunk in chunks[:-1]:
            c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
            assert c.reply()[0] == 250
        c.send(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
        answer = c.reply()
        assert c.cmd("QUIT")[0] == 221
    return answer


@pytest.mark.parametrize("bare", [b"\n", b"\r", b"\n.\r\n"])
def test_bdat_with_a_bare_newline_is_refused_like_data(shared: Server, bare: bytes) -> None:
    # The same rule as DATA (RFC 5321 §2.3.8): a message relayed on with DATA must not carry a
    # bare LF that the next hop could read as an end of data.
    tag = uuid.uuid4().hex
    head = b"From: a@remote.test\r\nSubject: bdat " + tag.encode() + b"\r\n\r\nbody"
    with RawClient(shared.host, shared.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<a@remote.test>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.test>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(head + bare + b"more\r\n.\r\n")
        data_answer = c.reply()
    bdat_answer = bdat_message(shared, [head + bare + b"more\r\n"], "alice@example.test")
    assert data_answer[0] == 550 and data_answer[1][0].startswith("5.5.2"), data_answer
    assert bdat_answer == data_answer
    time.sleep(0.3)
    assert [m for m in shared.messages("alice@example.test") if tag.encode() in m] == []


def test_bdat_crlf_split_between_two_chunks_is_not_bare(shared: Server) -> None:
    tag = uuid.uuid4().hex
    text = b"From: a@remote.test\r\nSubject: split " + tag.encode() + b"\r\n\r\nline one\r\nline two\r\n"
    cut = text.index(b"one\r\n") + 4  # the first chunk ends with CR, the second starts with LF
    code, lines = bdat_message(shared, [text[:cut], text[cut:]], "bob@example.test")
    assert code == 250, lines
    deadline = time.monotonic() + 15
    while not [m for m in shared.messages("bob@example.test") if tag.encode() in m]:
        assert time.monotonic() < deadline, "the message never arrived"
        time.sleep(0.05)
