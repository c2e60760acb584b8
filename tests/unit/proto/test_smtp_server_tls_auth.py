"""Server core: STARTTLS (command injection, state reset) and AUTH exchanges."""

from __future__ import annotations

import pytest

from pigeon.proto.smtp.errors import LocalProtocolError
from pigeon.proto.smtp.events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    CommandRejected,
    Ehlo,
    MailFrom,
    Noop,
    StartTls,
)
from pigeon.proto.smtp.reply import C250_OK, Reply
from pigeon.proto.smtp.server import ServerConnection, ServerState
from tests.unit.proto.smtp_harness import C220_TLS, C334, GREETING, Session


def test_starttls_drops_pipelined_plaintext() -> None:
    # CVE-2011-0411: commands sent in clear after STARTTLS must not run inside TLS.
    s = Session().feed(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<attacker@example.org>\r\nRCPT TO:<x@example.com>\r\n")
    assert s.commands() == [Ehlo("c"), StartTls()]
    assert s.conn.tls_active and not s.conn.ehlo_done and not s.conn.extensions_ok
    assert s.replies() == [b"250 2.0.0 OK\r\n", b"220 2.0.0 Ready to start TLS\r\n"]
    s.feed(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n")
    last = s.commands()[-1]
    assert isinstance(last, MailFrom) and last.sender is not None and last.sender.local == "a"


def test_input_arriving_between_reply_and_start_tls_is_dropped() -> None:
    conn = ServerConnection(0)
    conn.send(GREETING)
    conn.receive_data(b"STARTTLS\r\n")
    assert conn.next_event() == StartTls()
    conn.send(C220_TLS)
    conn.receive_data(b"NOOP\r\n")  # still clear text
    conn.start_tls()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"NOOP\r\n")  # now from inside TLS
    assert conn.next_event() == Noop()


def test_starttls_resets_session_and_cannot_repeat() -> None:
    s = Session().feed(b"EHLO c\r\nMAIL FROM:<>\r\nRSET\r\nSTARTTLS\r\n")
    assert not s.conn.in_transaction
    s.feed(b"EHLO c\r\nSTARTTLS\r\n")
    assert s.replies()[-1] == b"503 5.5.1 TLS already active\r\n"


def test_start_tls_only_after_220() -> None:
    conn = ServerConnection(0)
    conn.send(GREETING)
    with pytest.raises(LocalProtocolError):
        conn.start_tls()
    conn.receive_data(b"STARTTLS\r\n")
    conn.next_event()
    conn.send(Reply(454, "4.7.0", "TLS not available"))
    with pytest.raises(LocalProtocolError):
        conn.start_tls()


def test_auth_exchange_with_continuation() -> None:
    s = Session().feed(b"EHLO c\r\nAUTH LOGIN\r\n")
    assert s.commands()[-1] == Auth("LOGIN", None)
    assert s.conn.state is ServerState.AUTH
    s.feed(b"dXNlcg==\r\n")
    assert s.commands()[-1] == AuthResponse("dXNlcg==")
    assert s.conn.authenticated
    assert s.replies()[-2:] == [b"334 \r\n", b"235 2.7.0 Authentication successful\r\n"]
    s.feed(b"AUTH PLAIN\r\n")
    assert s.replies()[-1] == b"503 5.5.1 Already authenticated\r\n"


def test_auth_response_line_is_never_parsed_as_a_command() -> None:
    s = Session().feed(b"EHLO c\r\nAUTH PLAIN\r\nQUIT\r\n")
    assert s.commands()[-1] == AuthResponse("QUIT")
    assert not s.closed


def test_auth_cancel() -> None:
    def policy(conn: ServerConnection, ev: object) -> Reply | None:
        if isinstance(ev, AuthResponse):
            return Reply(501, "5.0.0", "Authentication cancelled")
        if isinstance(ev, Auth):
            return C334
        return C250_OK

    s = Session(policy=policy).feed(b"EHLO c\r\nAUTH PLAIN\r\n*\r\nNOOP\r\n")
    assert s.commands()[-2:] == [AuthResponse("*"), Noop()]
    assert not s.conn.authenticated
    assert s.codes()[-2:] == [501, 250]


def test_auth_line_limit() -> None:
    conn = ServerConnection(0, auth_line_limit=100)
    s = Session(conn).feed(b"EHLO c\r\nAUTH PLAIN\r\n" + b"A" * 500 + b"\r\nNOOP\r\n")
    assert isinstance(s.events[-2], CommandRejected)
    assert s.events[-2].reply.to_bytes() == b"500 5.5.6 Authentication exchange line is too long\r\n"
    assert s.events[-1] == Noop()


def test_auth_repr_hides_the_payload() -> None:
    assert "AGFA" not in repr(Auth("PLAIN", "AGFAYg=="))
    assert "c2VjcmV0" not in repr(AuthResponse("c2VjcmV0"))
