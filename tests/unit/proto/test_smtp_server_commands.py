"""Server core: command bytes ⇄ events and reply bytes, sequence table, command-line limits."""

from __future__ import annotations

import pytest
from tests.unit.proto.smtp_harness import EHLO_MAIL_RCPT, Session, default_reply

from pigeon.core.address import Address
from pigeon.proto.smtp.errors import LocalProtocolError
from pigeon.proto.smtp.events import (
    NEED_DATA,
    Auth,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    MailFrom,
    MailParams,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
)
from pigeon.proto.smtp.reply import C250_OK, C421_FORBIDDEN_COMMAND, Reply
from pigeon.proto.smtp.server import ServerConnection, ServerState

A = Address("a", "example.org")
B = Address("b", "example.com")

# (input after EHLO, expected event) — byte-exact command ⇄ event table.
COMMANDS_AFTER_EHLO = [
    (b"HELO other.example\r\n", Helo("other.example")),
    (b"ehlo Other.Example\r\n", Ehlo("Other.Example")),
    (b"MAIL FROM:<a@example.org>\r\n", MailFrom(A, MailParams())),
    (b"mail from:<a@EXAMPLE.org>\r\n", MailFrom(A, MailParams())),
    (b"MAIL FROM: <a@example.org>\r\n", MailFrom(A, MailParams())),  # Postfix-style space
    (b"MAIL FROM:<>\r\n", MailFrom(None, MailParams())),
    (b"MAIL FROM:a@example.org\r\n", MailFrom(A, MailParams())),  # tolerated bare path
    (b"MAIL FROM:<@relay.one,@relay.two:a@example.org>\r\n", MailFrom(A, MailParams())),
    (
        b"MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=QQ+2B314\r\n",
        MailFrom(A, MailParams(size=1000, body="8BITMIME", ret="HDRS", envid="QQ+314")),
    ),
    (b"MAIL FROM:<a@example.org> body=binarymime\r\n", MailFrom(A, MailParams(body="BINARYMIME"))),
    (b"MAIL FROM:<a@example.org> AUTH=<>\r\n", MailFrom(A, MailParams(auth="<>"))),
    (
        "MAIL FROM:<jösé@bücher.example> SMTPUTF8\r\n".encode(),
        MailFrom(Address("jösé", "bücher.example"), MailParams(smtputf8=True)),
    ),
    (b"MAIL FROM:<\"a>b\"@example.org>\r\n", MailFrom(Address('"a>b"', "example.org"), MailParams())),
    (b"RSET\r\n", Rset()),
    (b"NOOP\r\n", Noop()),
    (b"NOOP anything at all\r\n", Noop()),
    (b"VRFY postmaster\r\n", Vrfy("postmaster")),
    (b"EXPN staff\r\n", Expn("staff")),
    (b"HELP\r\n", Help("")),
    (b"HELP MAIL\r\n", Help("MAIL")),
    (b"STARTTLS\r\n", StartTls()),
    (b"AUTH PLAIN\r\n", Auth("PLAIN", None)),
    (b"AUTH plain AGFAYg==\r\n", Auth("PLAIN", "AGFAYg==")),
    (b"AUTH PLAIN =\r\n", Auth("PLAIN", "")),
    (b"QUIT\r\n", Quit()),
    (b"QUIT\n", Quit()),  # bare LF tolerated on command lines
]


@pytest.mark.parametrize(("line", "expected"), COMMANDS_AFTER_EHLO)
def test_command_to_event(line: bytes, expected: object) -> None:
    s = Session().feed(b"EHLO client.example\r\n", line)
    assert s.commands()[1] == expected


def test_rcpt_events() -> None:
    s = Session().feed(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n"
        b"RCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<b@example.com> NOTIFY=success,Delay ORCPT=rfc822;b+2Bx@example.com\r\n"
        b"RCPT TO:<b@example.com> NOTIFY=NEVER\r\n"
        b"RCPT TO:<Postmaster>\r\n"
        b"RCPT TO:<@hop.example:b@example.com>\r\n"
    )
    evs = s.commands()[2:]
    assert evs == [
        RcptTo(B),
        RcptTo(B, ("SUCCESS", "DELAY"), "rfc822;b+x@example.com", "NOTIFY=success,Delay ORCPT=rfc822;b+2Bx@example.com"),
        RcptTo(B, ("NEVER",), None, "NOTIFY=NEVER"),
        RcptTo(Address("postmaster", "")),
        RcptTo(B),
    ]
    assert s.conn.rcpt_count == 5


def test_postmaster_domain_is_applied() -> None:
    s = Session(ServerConnection(0, postmaster_domain="example.com"))
    s.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n")
    assert s.commands()[2] == RcptTo(Address("postmaster", "example.com"))


def test_reply_bytes_for_a_dialogue() -> None:
    s = Session().feed(EHLO_MAIL_RCPT + b"VRFY x\r\nQUIT\r\n")
    assert s.out == (
        b"220 mx.example ESMTP Pigeon\r\n"
        b"250 2.0.0 OK\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n"
        b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        b"221 2.0.0 Bye\r\n"
    )
    assert s.closed and s.conn.state is ServerState.CLOSED


# (commands before, offending line, expected reply line)
REJECTIONS = [
    (b"", b"MAIL FROM:<a@example.org>\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (b"EHLO c\r\n", b"RCPT TO:<b@example.com>\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (b"EHLO c\r\n", b"DATA\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (b"EHLO c\r\nMAIL FROM:<>\r\n", b"DATA\r\n", b"554 5.5.1 No valid recipients\r\n"),
    (b"EHLO c\r\nMAIL FROM:<>\r\n", b"MAIL FROM:<>\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (b"HELO c\r\n", b"AUTH PLAIN\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (EHLO_MAIL_RCPT, b"AUTH PLAIN\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (EHLO_MAIL_RCPT, b"STARTTLS\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (b"", b"FROB\r\n", b"500 5.5.2 Command not recognized\r\n"),
    (b"", b"\r\n", b"500 5.5.2 Empty command line\r\n"),
    (b"", b"TURN\r\n", b"502 5.5.1 Command not implemented\r\n"),
    (b"", b"ETRN example.org\r\n", b"502 5.5.1 Command not implemented\r\n"),
    (b"", b"HELO\r\n", b"501 5.5.4 Argument required\r\n"),
    (b"", b"NO\x00OP\r\n", b"500 5.5.2 Bare CR or NUL in command line\r\n"),
    (b"", b"NOOP\rx\r\n", b"500 5.5.2 Bare CR or NUL in command line\r\n"),
    (b"", b"NOOP \xff\r\n", b"500 5.5.2 Command line is not valid UTF-8 text\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@>\r\n", b"501 5.1.3 Bad address syntax: address must be local@domain\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM <a@example.org>\r\n", b"501 5.5.4 Syntax: FROM:<address>\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@example.org\r\n", b"501 5.5.4 Syntax: unterminated <path>\r\n"),
    (b"EHLO c\r\n", "MAIL FROM:<jösé@example.org>\r\n".encode(),
     b"553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@example.org> FOO=BAR\r\n",
     b"555 5.5.4 Unsupported parameter: FOO\r\n"),
    (b"HELO c\r\n", b"MAIL FROM:<a@example.org> SIZE=10\r\n", b"555 5.5.4 Unsupported parameter: SIZE\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@example.org> SIZE=10 SIZE=10\r\n", b"501 5.5.4 Duplicate parameter: SIZE\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@example.org> SIZE=ten\r\n", b"501 5.5.4 Bad SIZE= value\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@example.org> SIZE=10001\r\n",
     b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@example.org> BODY=9BIT\r\n", b"501 5.5.4 Bad BODY= value\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<a@example.org> ENVID=a+zz\r\n", b"501 5.5.4 Malformed xtext\r\n"),
    (b"EHLO c\r\nMAIL FROM:<>\r\n", b"RCPT TO:<>\r\n", b"501 5.1.3 Null recipient not allowed\r\n"),
    (b"EHLO c\r\nMAIL FROM:<>\r\n", b"RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS\r\n",
     b"501 5.5.4 Bad NOTIFY= value\r\n"),
    (b"EHLO c\r\nMAIL FROM:<>\r\n", b"RCPT TO:<b@example.com> NOTIFY=SOMETIMES\r\n",
     b"501 5.5.4 Bad NOTIFY= value\r\n"),
    (b"EHLO c\r\nMAIL FROM:<>\r\n", b"RCPT TO:<b@example.com> ORCPT=b@example.com\r\n",
     b"501 5.5.4 Bad ORCPT= value\r\n"),
    (b"HELO c\r\nMAIL FROM:<>\r\n", b"RCPT TO:<b@example.com> NOTIFY=NEVER\r\n",
     b"555 5.5.4 Unsupported parameter: NOTIFY\r\n"),
    (b"EHLO c\r\n", b"MAIL FROM:<@relay.example,hop.example:a@example.org>\r\n", b"501 5.1.3 Bad source route\r\n"),
    (b"EHLO c\r\n", b"DATA extra\r\n", b"503 5.5.1 Bad sequence of commands\r\n"),
    (EHLO_MAIL_RCPT, b"DATA extra\r\n", b"501 5.5.4 This command takes no argument\r\n"),
    (b"EHLO c\r\n", b"AUTH PL@IN\r\n", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"),
]


@pytest.mark.parametrize(("before", "line", "reply"), REJECTIONS)
def test_rejections(before: bytes, line: bytes, reply: bytes) -> None:
    s = Session().feed(before)
    n = len(s.events)
    s.feed(line)
    new = s.events[n:]
    assert len(new) == 1 and isinstance(new[0], CommandRejected)
    assert new[0].line == line
    assert s.replies()[-1] == reply
    assert new[0].reply.to_bytes() == reply


def test_ehlo_resets_transaction_and_rset_too() -> None:
    s = Session().feed(EHLO_MAIL_RCPT)
    assert s.conn.in_transaction and s.conn.rcpt_count == 1
    s.feed(b"RSET\r\n")
    assert not s.conn.in_transaction and s.conn.rcpt_count == 0
    s.feed(b"MAIL FROM:<>\r\nEHLO again\r\n")
    assert not s.conn.in_transaction and s.conn.ehlo_done and s.conn.extensions_ok


def test_helo_disables_extensions() -> None:
    s = Session().feed(b"HELO c\r\n")
    assert s.conn.ehlo_done and not s.conn.extensions_ok


def test_refused_rcpt_does_not_count() -> None:
    def policy(conn: ServerConnection, ev: object) -> Reply | None:
        from tests.unit.proto.smtp_harness import default_reply

        if isinstance(ev, RcptTo):
            return Reply(550, "5.1.1", "No such user")
        return default_reply(conn, ev)  # type: ignore[arg-type]

    s = Session(policy=policy).feed(EHLO_MAIL_RCPT + b"DATA\r\n")
    assert s.conn.rcpt_count == 0
    assert s.replies()[-1] == b"554 5.5.1 No valid recipients\r\n"


def test_one_event_at_a_time_until_reply() -> None:
    conn = ServerConnection(0)
    conn.send(Reply(220, "", "hi"))
    conn.receive_data(b"EHLO c\r\nNOOP\r\nNOOP\r\n")
    assert conn.next_event() == Ehlo("c")
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    conn.send(C250_OK)
    assert conn.next_event() == Noop()
    conn.send(C250_OK)
    assert conn.next_event() == Noop()
    conn.send(C250_OK)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"220 hi\r\n" + b"250 2.0.0 OK\r\n" * 3


def test_greeting_must_come_first_and_send_needs_a_command() -> None:
    conn = ServerConnection(0)
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    conn.send(Reply(220, "", "hi"))
    with pytest.raises(LocalProtocolError):
        conn.send(C250_OK)


def test_554_greeting_refuses_everything_but_quit() -> None:
    conn = ServerConnection(0)
    conn.send(Reply(554, "5.7.1", "No SMTP service here"))
    s = Session.__new__(Session)
    s.conn, s.policy, s.events, s.closed = conn, default_reply, [], False
    s.out = conn.data_to_send()
    s.feed(b"EHLO c\r\nMAIL FROM:<>\r\nQUIT\r\n")
    assert s.codes() == [503, 503, 221]


def test_unsolicited_421_closes() -> None:
    s = Session().feed(b"EHLO c\r\n")
    s.conn.send(Reply(421, "4.4.2", "Timeout"))
    assert s.conn.state is ServerState.CLOSED
    assert s.conn.next_event() == ConnectionClosed()


def test_web_request_closes_with_421() -> None:
    s = Session().feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.closed
    assert s.codes() == [421]  # RFC 5321 §3.8: a server closes with 421
    assert s.replies() == [C421_FORBIDDEN_COMMAND.to_bytes()]


def test_web_request_after_pipelined_commands_comes_after_their_replies() -> None:
    s = Session().feed(b"EHLO c\r\nNOOP\r\nPOST / HTTP/1.1\r\nNOOP\r\n")
    assert s.closed and s.conn.state is ServerState.CLOSED
    assert s.codes() == [250, 250, 421]  # the NOOP after the request line is never read


def test_eof_gives_connection_closed_after_pipelined_commands() -> None:
    s = Session().feed(b"EHLO c\r\nNOOP\r\nNOO").eof()
    assert s.commands() == [Ehlo("c"), Noop(), ConnectionClosed()]


# --- command line limits (RFC 5321 §4.5.3.1.4) ---------------------------------------------


def test_command_line_of_exactly_512_octets_is_accepted() -> None:
    line = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    s = Session().feed(line)
    assert s.commands() == [Noop()]


def test_command_line_over_512_is_rejected_and_discarded() -> None:
    line = b"NOOP " + b"x" * (513 - 7) + b"\r\n"
    s = Session().feed(line + b"QUIT\r\n")
    assert isinstance(s.events[0], CommandRejected)
    assert s.events[0].reply.code == 500 and s.events[0].reply.enhanced == "5.5.2"
    assert s.events[1] == Quit()
    assert s.replies() == [b"500 5.5.2 Line too long\r\n", b"221 2.0.0 Bye\r\n"]


def test_huge_command_line_is_not_buffered() -> None:
    s = Session()
    for _ in range(100):
        s.feed(b"A" * 10_000)
        assert s.conn.input_buffered < 1024
    s.feed(b"\r\nNOOP\r\n")
    assert [type(e) for e in s.events] == [CommandRejected, Noop]


def test_mail_line_gets_esmtp_allowance_after_ehlo() -> None:
    envid = b"x" * 90
    line = b"MAIL FROM:<" + b"a" * 60 + b"@" + b"b" * 60 + b".example.org> SIZE=100 BODY=8BITMIME ENVID=" + envid
    line += b" RET=FULL AUTH=" + b"c" * 300 + b"\r\n"
    assert 512 < len(line) < 512 + 1024
    s = Session().feed(b"EHLO c\r\n", line)
    assert isinstance(s.events[1], MailFrom)
    s2 = Session().feed(b"HELO c\r\n", line)
    assert isinstance(s2.events[1], CommandRejected)
    assert s2.events[1].reply.to_bytes() == b"500 5.5.2 Line too long\r\n"


def test_not_offered_extensions_are_refused() -> None:
    conn = ServerConnection(0, offered=frozenset({"PIPELINING", "8BITMIME"}))
    s = Session(conn).feed(b"EHLO c\r\nSTARTTLS\r\nAUTH PLAIN\r\nMAIL FROM:<a@example.org> SIZE=5\r\n")
    assert s.codes() == [250, 502, 502, 555]


def test_data_event_and_binarymime_needs_bdat() -> None:
    s = Session().feed(EHLO_MAIL_RCPT + b"DATA\r\n")
    assert s.commands()[-1] == Data()
    s2 = Session().feed(b"EHLO c\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert s2.replies()[-1] == b"503 5.5.1 BODY=BINARYMIME requires BDAT, not DATA\r\n"


@pytest.mark.parametrize(
    "line",
    [
        "ſtarttlſ",  # U+017F LATIN SMALL LETTER LONG S: str.upper() gives "S"
        "quıt",  # U+0131 LATIN SMALL LETTER DOTLESS I: str.upper() gives "I"
        "rſet",
        "maıl FROM:<a@example.org>",
    ],
)
def test_verbs_are_case_insensitive_in_ascii_only(line: str) -> None:
    # A verb a filter in front of us reads as unknown must not be a command here (RFC 5321 §2.4).
    s = Session().feed(b"EHLO c\r\n" + line.encode() + b"\r\nNOOP\r\n")
    assert s.codes() == [250, 500, 250]
    assert not s.closed


def test_bdat_last_and_mechanism_names_fold_ascii_only() -> None:
    s = Session().feed("EHLO c\r\nAUTH PLAİN\r\nAUTH plaın\r\nNOOP\r\n".encode())
    assert s.codes() == [250, 501, 501, 250]
    s = Session().feed(EHLO_MAIL_RCPT + "BDAT 2 laſt\r\nab".encode())
    assert s.codes()[-1] == 421  # not LAST: an unreadable BDAT line, fatal (rule 8)
    s = Session().feed(b"EHLO c\r\n" + "MAIL FROM:<a@example.org> BODY=bınarymıme\r\n".encode()
                       + "MAIL FROM:<a@example.org> RET=hdrſ\r\n".encode())
    assert s.codes() == [250, 501, 501]
