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
