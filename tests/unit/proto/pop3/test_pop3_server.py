"""The sans-IO POP3 server core: states, sequence, line limits, STLS, AUTH continuations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.pop3 import events as ev
from pigeon.proto.pop3.errors import LocalProtocolError
from pigeon.proto.pop3.events import NEED_DATA
from pigeon.proto.pop3.responses import (
    ERR_BAD_SEQUENCE,
    ERR_LINE_TOO_LONG,
    ERR_PASS_WITHOUT_USER,
    ERR_SYNTAX,
    ERR_TLS_ACTIVE,
    ERR_UNKNOWN_COMMAND,
    OK,
    Continuation,
    MultiLine,
    Response,
)
from pigeon.proto.pop3.server import MAX_COMMAND_LINE, Pop3State, ServerConnection

GREETING = Response(True, "ready")


def connected(**kw: int | bool) -> ServerConnection:
    conn = ServerConnection(**kw)  # type: ignore[arg-type]
    conn.send(GREETING)
    assert conn.data_to_send() == b"+OK ready\r\n"
    return conn


def feed(conn: ServerConnection, data: bytes) -> ev.Event:
    conn.receive_data(data)
    event = conn.next_event()
    assert event is not NEED_DATA
    return event


def login(conn: ServerConnection) -> None:
    assert feed(conn, b"USER alice\r\n") == ev.User("alice")
    conn.send(OK)
    assert feed(conn, b"PASS pw\r\n") == ev.Pass("pw")
    conn.send(OK)
    conn.data_to_send()
    assert conn.state is Pop3State.TRANSACTION


def test_user_pass_dialogue_and_quit_through_update() -> None:
    conn = connected()
    assert conn.next_event() is NEED_DATA
    login(conn)
    assert feed(conn, b"STAT\r\n") == ev.Stat()
    conn.send(Response(True, "0 0"))
    assert feed(conn, b"QUIT\r\n") == ev.Quit()
    assert conn.state is Pop3State.UPDATE  # RFC 1939 §6
    conn.send(Response(True, "bye"))
    assert conn.state is Pop3State.CLOSED
    assert conn.data_to_send() == b"+OK 0 0\r\n+OK bye\r\n"
    assert isinstance(conn.next_event(), ev.ConnectionClosed)


def test_quit_in_authorization_closes_without_update() -> None:
    conn = connected()
    assert feed(conn, b"QUIT\r\n") == ev.Quit()
    assert conn.state is Pop3State.AUTHORIZATION
    conn.send(OK)
    assert conn.state is Pop3State.CLOSED


@pytest.mark.parametrize("line", [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"TOP 1 1", b"UIDL"])
def test_transaction_commands_refused_before_login(line: bytes) -> None:
    conn = connected()
    event = feed(conn, line + b"\r\n")
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_BAD_SEQUENCE
    assert conn.data_to_send() == b"-ERR Command not valid in this state\r\n"


@pytest.mark.parametrize(
    "line",
    [
        b"USER bob", b"PASS x", b"AUTH PLAIN", b"AUTH", b"STLS",
        # a known verb out of its state is a sequence error even when its arguments are wrong
        b"USER", b"PASS", b"STLS now",
    ],
)
def test_authorization_commands_refused_after_login(line: bytes) -> None:
    conn = connected()
    login(conn)
    event = feed(conn, line + b"\r\n")
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_BAD_SEQUENCE
    assert conn.data_to_send() == b"-ERR Command not valid in this state\r\n"
    assert conn.state is Pop3State.TRANSACTION


def test_bad_arguments_to_a_command_of_the_state_are_a_syntax_error() -> None:
    conn = connected()
    login(conn)
    event = feed(conn, b"RETR x\r\n")  # RETR belongs to TRANSACTION: its argument is what is wrong
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_SYNTAX
    assert conn.data_to_send() == b"-ERR Syntax error in arguments\r\n"


def test_pass_only_right_after_accepted_user() -> None:
    conn = connected()
    event = feed(conn, b"PASS pw\r\n")
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_PASS_WITHOUT_USER
    assert feed(conn, b"USER alice\r\n") == ev.User("alice")
    conn.send(Response(False, "no"))  # refused USER: PASS still not allowed
    assert isinstance(feed(conn, b"PASS pw\r\n"), ev.CommandRejected)
    assert feed(conn, b"USER alice\r\n") == ev.User("alice")
    conn.send(OK)
    assert feed(conn, b"CAPA\r\n") == ev.Capa()  # any other command forgets the USER
    conn.send(MultiLine.of_lines(OK, ["TOP"]))
    assert isinstance(feed(conn, b"PASS pw\r\n"), ev.CommandRejected)


def test_failed_pass_stays_in_authorization() -> None:
    conn = connected()
    feed(conn, b"USER alice\r\n")
    conn.send(OK)
    feed(conn, b"PASS wrong\r\n")
    conn.send(Response(False, "bad", "AUTH"))
    assert conn.state is Pop3State.AUTHORIZATION
    assert isinstance(feed(conn, b"PASS again\r\n"), ev.CommandRejected)


def test_unknown_command_and_empty_line() -> None:
    conn = connected()
    event = feed(conn, b"XTND XMIT\r\n")
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_UNKNOWN_COMMAND
    event = feed(conn, b"\r\n")
    assert isinstance(event, ev.CommandRejected)


def test_one_command_at_a_time_pipelined() -> None:
    conn = connected()
    login(conn)
    conn.receive_data(b"STAT\r\nLIST\r\nNOOP\r\n")
    assert conn.next_event() == ev.Stat()
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # rule 1: answer first
    conn.send(OK)
    assert conn.next_event() == ev.List(None)
    conn.send(MultiLine.of_lines(OK, []))
    assert conn.next_event() == ev.Noop()
    conn.send(OK)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"+OK\r\n+OK\r\n.\r\n+OK\r\n"


def test_lenient_bare_lf() -> None:
    conn = connected()
    assert feed(conn, b"CAPA\n") == ev.Capa()


def test_line_limit_255_octets_with_crlf() -> None:
    conn = connected()
    ok_line = b"USER " + b"a" * (MAX_COMMAND_LINE - 7) + b"\r\n"
    assert len(ok_line) == MAX_COMMAND_LINE
    assert isinstance(feed(conn, ok_line), ev.User)
    conn.send(Response(False, "no"))
    long_line = b"USER " + b"a" * (MAX_COMMAND_LINE - 6) + b"\r\n"
    event = feed(conn, long_line)
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_LINE_TOO_LONG
    assert feed(conn, b"CAPA\r\n") == ev.Capa()  # the next line parses normally


def test_over_long_line_is_never_buffered_whole() -> None:
    conn = connected()
    for _ in range(100):
        conn.receive_data(b"x" * 10_000)
        assert conn.next_event() is NEED_DATA
        assert conn.input_buffered < MAX_COMMAND_LINE + 10_000
    conn.receive_data(b"yyy\r\nCAPA\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_LINE_TOO_LONG
    assert conn.next_event() == ev.Capa()


def test_auth_continuations() -> None:
    conn = connected()
    assert feed(conn, b"AUTH LOGIN\r\n") == ev.Auth("LOGIN")
    conn.send(Continuation("VXNlcm5hbWU6"))
    assert conn.in_auth
    assert feed(conn, b"YWxpY2U=\r\n") == ev.AuthResponse("YWxpY2U=")
    conn.send(Continuation("UGFzc3dvcmQ6"))
    # SASL lines may be longer than a command line
    long = b"A" * 1000
    assert feed(conn, long + b"\r\n") == ev.AuthResponse(long.decode())
    conn.send(OK)
    assert not conn.in_auth and conn.state is Pop3State.TRANSACTION
    assert conn.data_to_send() == b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK\r\n"


def test_auth_cancel_line_and_failure() -> None:
    conn = connected()
    feed(conn, b"AUTH PLAIN\r\n")
    conn.send(Continuation())
    assert feed(conn, b"*\r\n") == ev.AuthResponse("*")
    conn.send(Response(False, "cancelled"))
    assert conn.state is Pop3State.AUTHORIZATION and not conn.in_auth
    assert feed(conn, b"CAPA\r\n") == ev.Capa()  # back to commands


def test_over_long_sasl_line_ends_the_exchange() -> None:
    conn = connected(max_auth_line=100)
    feed(conn, b"AUTH PLAIN\r\n")
    conn.send(Continuation())
    event = feed(conn, b"A" * 200 + b"\r\n")
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_LINE_TOO_LONG
    assert not conn.in_auth
    assert feed(conn, b"QUIT\r\n") == ev.Quit()


def test_bare_auth_listing_is_multiline() -> None:
    conn = connected()
    assert feed(conn, b"AUTH\r\n") == ev.Auth("")
    conn.send(MultiLine.of_lines(OK, ["PLAIN", "LOGIN"]))
    assert conn.state is Pop3State.AUTHORIZATION
    assert conn.data_to_send() == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"


def test_stls_discards_pipelined_input() -> None:
    conn = connected()
    conn.receive_data(b"STLS\r\nUSER evil\r\nPASS injected\r\n")
    assert conn.next_event() == ev.Stls()
    conn.send(Response(True, "Begin TLS"))
    with pytest.raises(LocalProtocolError):
        conn.next_event()  # start_tls must come first
    conn.start_tls()
    assert conn.tls_active
    assert conn.next_event() is NEED_DATA  # CVE-2011-0411: nothing survives
    conn.receive_data(b"STLS\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.CommandRejected) and event.response == ERR_TLS_ACTIVE


def test_refused_stls_keeps_plaintext() -> None:
    conn = connected()
    feed(conn, b"STLS\r\n")
    conn.send(Response(False, "no TLS"))
    with pytest.raises(LocalProtocolError):
        conn.start_tls()
    assert feed(conn, b"CAPA\r\n") == ev.Capa()


def test_misuse_raises() -> None:
    conn = ServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(MultiLine.of_lines(OK, []))  # greeting is single-line
    conn.send(GREETING)
    with pytest.raises(LocalProtocolError):
        conn.send(OK)  # nothing to answer
    login(conn)
    feed(conn, b"STAT\r\n")
    with pytest.raises(LocalProtocolError):
        conn.send(MultiLine.of_lines(OK, []))
    with pytest.raises(LocalProtocolError):
        conn.send(Continuation())
    conn.send(OK)
    feed(conn, b"LIST 1\r\n")
    with pytest.raises(LocalProtocolError):
        conn.send(MultiLine.of_lines(OK, []))


def test_negative_greeting_closes() -> None:
    conn = ServerConnection()
    conn.send(Response(False, "go away", "SYS/TEMP"))
    assert conn.state is Pop3State.CLOSED
    assert isinstance(conn.next_event(), ev.ConnectionClosed)


def test_eof_and_close() -> None:
    conn = connected()
    conn.receive_data(b"NOOP")  # a partial line at EOF is dropped
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ev.ConnectionClosed)
    conn2 = connected()
    conn2.close(Response(False, "too many"))
    assert conn2.data_to_send() == b"-ERR too many\r\n"
    assert isinstance(conn2.next_event(), ev.ConnectionClosed)


SCRIPT = (
    b"CAPA\r\nUSER alice\r\nPASS pw with space\r\nSTAT\r\nLIST\r\nLIST 1\r\nUIDL\r\nTOP 1 2\r\n"
    b"RETR 1\r\nDELE 1\r\nRSET\r\nNOOP\r\nBOGUS\r\n" + b"X" * 300 + b"\r\nQUIT\r\n"
)


def run_script(chunks: list[bytes]) -> tuple[list[ev.Event], bytes]:
    conn = connected()
    events: list[ev.Event] = []
    pending = list(chunks)
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(pending.pop(0) if pending else b"")
            continue
        events.append(event)
        if isinstance(event, ev.ConnectionClosed):
            return events, conn.data_to_send()
        if isinstance(event, ev.CommandRejected):
            continue
        if isinstance(event, ev.Capa | ev.Retr | ev.Top) or event in (ev.List(None), ev.Uidl(None)):
            conn.send(MultiLine.of_lines(OK, [".hidden", "x"]))
        else:
            conn.send(OK)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(SCRIPT)), max_size=20))
def test_chunking_does_not_change_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks, last = [], 0
    for p in points:
        chunks.append(SCRIPT[last:p])
        last = p
    chunks.append(SCRIPT[last:])
    whole = run_script([SCRIPT])
    assert run_script([c for c in chunks if c]) == whole
    events = whole[0]
    assert events[2] == ev.Pass("pw with space")
    assert sum(isinstance(e, ev.CommandRejected) for e in events) == 2
    assert isinstance(events[-1], ev.ConnectionClosed)


@pytest.mark.parametrize("line", ["quıt", "ſtls", "uſer alice"])
def test_keywords_are_case_insensitive_in_ascii_only(line: str) -> None:
    # str.upper() turns U+0131 (dotless i) into "I" and U+017F (long s) into "S": such a
    # keyword is unknown, as it is to anything in front of us that compares ASCII.
    conn = connected()
    event = feed(conn, line.encode() + b"\r\n")
    assert event == ev.CommandRejected(ERR_UNKNOWN_COMMAND, "")
    assert conn.state is Pop3State.AUTHORIZATION


def test_auth_mechanism_is_upper_cased_in_ascii_only() -> None:
    conn = connected()
    assert feed(conn, b"AUTH plain\r\n") == ev.Auth("PLAIN")
    conn.send(Response(False, "no"))
    assert feed(conn, "AUTH plaın\r\n".encode()) == ev.Auth("plaın")  # not PLAIN
