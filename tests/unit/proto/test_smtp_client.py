"""Client core: command encoding, data stuffing, and whole dialogues against the server core."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.core.address import Address
from pigeon.proto.smtp.client import ClientConnection, DataEnd, Greeting, ReplyReceived, encode_command
from pigeon.proto.smtp.ehlo import ehlo_reply
from pigeon.proto.smtp.errors import LocalProtocolError
from pigeon.proto.smtp.events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    Bdat,
    BdatChunkEnd,
    Command,
    ConnectionClosed,
    Data,
    DataChunk,
    Ehlo,
    EndOfData,
    Helo,
    MailFrom,
    MailParams,
    Quit,
    RcptTo,
    ServerEvent,
    StartTls,
)
from pigeon.proto.smtp.reply import Reply
from pigeon.proto.smtp.server import ServerConnection
from tests.unit.proto.smtp_harness import C235, C334, GREETING, default_reply

A = Address("a", "example.org")
B = Address("b", "example.com")
EXTS = ["PIPELINING", "SIZE 100000", "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN", "STARTTLS", "AUTH PLAIN"]

ENCODING = [
    (Helo("me.example"), b"HELO me.example\r\n"),
    (Ehlo("me.example"), b"EHLO me.example\r\n"),
    (MailFrom(None), b"MAIL FROM:<>\r\n"),
    (
        MailFrom(A, MailParams(size=10, body="8BITMIME", smtputf8=True, ret="HDRS", envid="id+1 x", auth="<>")),
        b"MAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+20x AUTH=<>\r\n",
    ),
    (RcptTo(B, ("SUCCESS", "FAILURE"), "rfc822;b+x@example.com"),
     b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.com\r\n"),
    (Data(), b"DATA\r\n"),
    (Auth("PLAIN", ""), b"AUTH PLAIN =\r\n"),
    (Auth("LOGIN"), b"AUTH LOGIN\r\n"),
    (AuthResponse("*"), b"*\r\n"),
    (StartTls(), b"STARTTLS\r\n"),
    (Quit(), b"QUIT\r\n"),
]


@pytest.mark.parametrize(("cmd", "wire"), ENCODING)
def test_encode_command(cmd: Command, wire: bytes) -> None:
    assert encode_command(cmd) == wire


def test_encoded_commands_parse_back_on_the_server() -> None:
    # Every encoded MAIL/RCPT is understood by the server core as the same event.
    for cmd, wire in ENCODING[2:5]:
        conn = ServerConnection(0)
        conn.send(GREETING)
        conn.receive_data(b"EHLO c\r\nMAIL FROM:<>\r\n" if isinstance(cmd, RcptTo) else b"EHLO c\r\n")
        for _ in range(2 if isinstance(cmd, RcptTo) else 1):
            conn.next_event()
            conn.send(Reply(250, "2.0.0", "OK"))
        conn.receive_data(wire)
        ev = conn.next_event()
        if isinstance(cmd, RcptTo) and isinstance(ev, RcptTo):
            assert (ev.recipient, ev.notify, ev.orcpt) == (cmd.recipient, cmd.notify, cmd.orcpt)
        else:
            assert ev == cmd


def test_no_command_injection() -> None:
    with pytest.raises(LocalProtocolError):
        encode_command(Helo("x\r\nRSET"))
    with pytest.raises(LocalProtocolError):
        encode_command(Bdat(1, True))


class Wire:
    """A client core and a server core joined by an in-memory wire; the server app is scripted."""

    def __init__(self, server: ServerConnection | None = None) -> None:
        self.server = server or ServerConnection(100_000)
        self.client = ClientConnection()
        self.server_events: list[ServerEvent] = []
        self.server.send(GREETING)
        self.closed = False

    def server_policy(self, ev: ServerEvent) -> Reply | None:
        if isinstance(ev, Ehlo):
            return ehlo_reply("mx.example", ev.domain, EXTS)
        if isinstance(ev, AuthResponse):
            return C235
        return default_reply(self.server, ev)

    def run(self) -> list[ReplyReceived]:
        """Move bytes both ways until both sides are idle; return the client's replies."""
        got: list[ReplyReceived] = []
        for _ in range(100):
            c2s = self.client.data_to_send()
            if c2s:
                self.server.receive_data(c2s)
            while not self.closed:
                ev = self.server.next_event()
                if ev is NEED_DATA:
                    break
                self.server_events.append(ev)
                if isinstance(ev, ConnectionClosed):
                    self.closed = True
                    break
                r = self.server_policy(ev)
                if r is not None:
                    self.server.send(r)
                    if isinstance(ev, StartTls) and r.code == 220:
                        self.server.start_tls()
            s2c = self.server.data_to_send()
            if s2c:
                self.client.receive_data(s2c)
            progressed = bool(c2s or s2c)
            while True:
                cev = self.client.next_event()
                if cev is NEED_DATA or isinstance(cev, ConnectionClosed):
                    break
                got.append(cev)
            if not progressed:
                return got
        raise AssertionError("wire did not settle")


def test_pipelined_dialogue_with_dot_stuffing_round_trip() -> None:
    w = Wire()
    [greet] = w.run()
    assert greet.command == Greeting() and greet.reply.code == 220
    w.client.send_command(Ehlo("client.example"))
    [ehlo] = w.run()
    assert w.client.extensions is not None and w.client.extensions.pipelining
    assert ehlo.command == Ehlo("client.example")
    # RFC 2920: MAIL, RCPT, RCPT, DATA in one write.
    for cmd in (MailFrom(A), RcptTo(B), RcptTo(Address("c", "example.com")), Data()):
        w.client.send_command(cmd)
    got = w.run()
    assert [(r.command, r.reply.code) for r in got] == [
        (MailFrom(A), 250), (RcptTo(B), 250), (RcptTo(Address("c", "example.com")), 250), (Data(), 354)
    ]
    message = b".leading dot\n..two dots\r\n.\r\nlast line without newline"
    w.client.send_message_data(message[:7])
    w.client.send_message_data(message[7:])
    w.client.end_message_data()
    w.client.send_command(Quit())
    got = w.run()
    assert [(r.command, r.reply.code) for r in got] == [(DataEnd(), 250), (Quit(), 221)]
    body = b"".join(e.data for e in w.server_events if isinstance(e, DataChunk))
    assert body == b".leading dot\r\n..two dots\r\n.\r\nlast line without newline\r\n"
    end = [e for e in w.server_events if isinstance(e, EndOfData)]
    assert end == [EndOfData(None, False)]  # bare LF was converted: nothing to refuse
    assert w.client.closed


def test_bdat_dialogue() -> None:
    w = Wire()
    w.run()
    w.client.send_command(Ehlo("c"))
    w.run()
    w.client.send_command(MailFrom(A, MailParams(body="BINARYMIME")))
    w.client.send_command(RcptTo(B))
    w.client.send_bdat(b"\x00binary\r\n.\r\n", last=False)
    w.client.send_bdat(b"tail", last=True)
    got = w.run()
    assert [r.reply.code for r in got] == [250, 250, 250, 250]
    assert [r.command for r in got][2:] == [Bdat(12, False), Bdat(4, True)]
    body = b"".join(e.data for e in w.server_events if isinstance(e, DataChunk))
    assert body == b"\x00binary\r\n.\r\ntail"
    assert [e for e in w.server_events if isinstance(e, BdatChunkEnd)][-1] == BdatChunkEnd(True, None)


def test_auth_dialogue() -> None:
    w = Wire()
    w.run()
    w.client.send_command(Ehlo("c"))
    w.run()
    assert w.client.extensions is not None and "PLAIN" in w.client.extensions.auth_mechanisms
    w.client.send_command(Auth("PLAIN"))
    [r334] = w.run()
    assert r334.reply == C334 and r334.command == Auth("PLAIN")
    w.client.send_command(AuthResponse("AGFAYg=="))
    [r235] = w.run()
    assert r235.reply.code == 235 and w.server.authenticated


def test_starttls_dialogue_forgets_extensions() -> None:
    w = Wire()
    w.run()
    w.client.send_command(Ehlo("c"))
    w.run()
    w.client.send_command(StartTls())
    [r] = w.run()
    assert r.reply.code == 220
    w.client.start_tls()
    assert w.client.extensions is None and w.client.tls_active
    w.client.send_command(Ehlo("c"))
    w.run()
    assert w.client.extensions is not None and w.server.tls_active


def test_client_start_tls_drops_injected_replies() -> None:
    c = ClientConnection()
    c.receive_data(b"220 hi\r\n")
    c.next_event()
    c.send_command(StartTls())
    c.receive_data(b"220 2.0.0 go\r\n250 2.0.0 injected\r\n")
    ev = c.next_event()
    assert isinstance(ev, ReplyReceived) and ev.reply.code == 220
    c.start_tls()
    assert c.next_event() is NEED_DATA


def test_message_data_before_354_is_refused() -> None:
    c = ClientConnection()
    with pytest.raises(LocalProtocolError):
        c.send_message_data(b"x")
    c.receive_data(b"220 hi\r\n")
    c.next_event()
    c.send_command(Data())
    c.receive_data(b"354 go\r\n")
    c.next_event()
    with pytest.raises(LocalProtocolError):
        c.send_command(Quit())


def test_unsolicited_421_and_eof() -> None:
    c = ClientConnection()
    c.receive_data(b"220 hi\r\n421 4.3.2 going down\r\n")
    assert isinstance(c.next_event(), ReplyReceived)
    ev = c.next_event()
    assert isinstance(ev, ReplyReceived) and ev.command is None and ev.reply.code == 421
    assert c.next_event() == ConnectionClosed()
    c2 = ClientConnection()
    c2.receive_data(b"")
    assert c2.next_event() == ConnectionClosed()


def stuff(chunks: list[bytes]) -> bytes:
    c = ClientConnection()
    c.receive_data(b"220 hi\r\n")
    c.next_event()
    c.send_command(Data())
    c.receive_data(b"354 go\r\n")
    c.next_event()
    c.data_to_send()
    for ch in chunks:
        c.send_message_data(ch)
    c.end_message_data()
    return c.data_to_send()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=5))
def test_stuffing_round_trips_through_the_server(content: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(content) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in [*points, len(content)]:
        chunks.append(content[prev:p])
        prev = p
    wire = stuff(chunks)
    assert wire == stuff([content])  # chunk boundaries never matter
    conn = ServerConnection(0)
    conn.send(GREETING)
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    for _ in range(3):
        conn.next_event()
        conn.send(Reply(250, "2.0.0", "OK"))
    conn.next_event()
    conn.send(Reply(354, "", "go"))
    conn.receive_data(wire)
    body, end = b"", None
    while end is None:
        ev = conn.next_event()
        assert ev is not NEED_DATA
        if isinstance(ev, DataChunk):
            body += ev.data
        elif isinstance(ev, EndOfData):
            end = ev
    normalised = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert end == EndOfData(None, False)
    assert body == normalised
