"""Server core: DATA (dot-unstuffing, end of data, SMTP smuggling, limits) and BDAT."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.smtp.events import (
    Bdat,
    BdatChunkEnd,
    CommandRejected,
    ConnectionClosed,
    Data,
    DataChunk,
    EndOfData,
    MailFrom,
    Quit,
    RcptTo,
    ServerEvent,
)
from pigeon.proto.smtp.reply import (
    C421_BDAT_SYNTAX,
    C451_LOCAL_ERROR,
    C550_BARE_NEWLINE,
    C552_LINE_TOO_LONG,
    C552_MESSAGE_TOO_BIG,
    Reply,
)
from pigeon.proto.smtp.server import ServerConnection, ServerState
from tests.unit.proto.smtp_harness import C250_QUEUED, EHLO_MAIL_RCPT, Session, default_reply

START = EHLO_MAIL_RCPT + b"DATA\r\n"


def data_session(max_size: int = 10_000, hard: int = 65536) -> Session:
    return Session(ServerConnection(max_size, hard_line_limit=hard)).feed(START)


def test_simple_message_and_pipelined_quit() -> None:
    s = data_session().feed(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert s.body() == b"Subject: hi\r\n\r\nbody\r\n"
    assert s.commands()[-3:] == [EndOfData(None, False), Quit(), ConnectionClosed()]
    assert s.replies()[-3:] == [
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        b"250 2.0.0 Queued\r\n",
        b"221 2.0.0 Bye\r\n",
    ]


def test_one_chunk_for_many_lines() -> None:
    body = b"".join(b"line %d of the message\r\n" % i for i in range(500))
    s = data_session(max_size=0).feed(body + b".\r\n")
    chunks = [e for e in s.events if isinstance(e, DataChunk)]
    assert len(chunks) == 1 and chunks[0].data == body


def test_empty_message_uses_the_data_lines_crlf() -> None:
    s = data_session().feed(b".\r\n")
    assert s.body() == b""
    assert s.commands()[-1] == EndOfData(None, False)


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"..\r\n.\r\n", b".\r\n"),
        (b"..leading\r\n.\r\n", b".leading\r\n"),
        (b"...two\r\n.\r\n", b"..two\r\n"),
        (b"a\r\n..b\r\n..\r\n.\r\n", b"a\r\n.b\r\n.\r\n"),
        (b"a.b\r\n.\r\n", b"a.b\r\n"),
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n"),
    ],
)
def test_dot_unstuffing(wire: bytes, content: bytes) -> None:
    s = data_session().feed(wire)
    assert s.body() == content
    assert s.commands()[-1] == EndOfData(None, False)


# --- SMTP smuggling (CVE-2023-51764 / -51765 / -51766 class) -------------------------------

SMUGGLED = b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged\r\n"


@pytest.mark.parametrize(
    "fake_end",
    [
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\n.\r",
        b"\r\n\x00.\r\n",
    ],
)
def test_smuggling_sequences_do_not_end_data(fake_end: bytes) -> None:
    s = data_session()
    n = len(s.commands())
    s.feed(b"Subject: x\r\n\r\nhello" + fake_end + SMUGGLED)
    # Nothing after the fake end is read as a command: the data is still open.
    assert s.commands()[n:] == []
    assert s.conn.state is ServerState.DATA
    s.feed(b".\r\n")
    tail = s.commands()[n:]
    assert len(tail) == 1 and isinstance(tail[0], EndOfData)
    assert not any(isinstance(e, (MailFrom, RcptTo)) for e in s.events[n:])
    if fake_end != b"\r\n\x00.\r\n":
        assert tail[0].bare_newline
    # The smuggled text is message content, never a second transaction.
    wire = b"Subject: x\r\n\r\nhello" + fake_end + SMUGGLED
    assert s.body() == wire.replace(b"\n.", b"\n")


def test_bare_lf_and_bare_cr_are_flagged_not_fixed() -> None:
    s = data_session().feed(b"a\nb\r\n.\r\n")
    assert s.commands()[-1] == EndOfData(None, True)
    assert s.body() == b"a\nb\r\n"
    assert s.replies()[-1].startswith(b"550 5.5.2")
    s2 = data_session().feed(b"a\rb\r\n.\r\n")
    assert s2.commands()[-1] == EndOfData(None, True)


def test_end_marker_split_across_reads() -> None:
    s = data_session()
    for piece in (b"x\r", b"\n", b".", b"\r", b"\n"):
        s.feed(piece)
    assert s.body() == b"x\r\n"
    assert s.commands()[-1] == EndOfData(None, False)


def test_eof_in_data_is_connection_closed() -> None:
    s = data_session().feed(b"partial\r\n").eof()
    assert s.commands()[-1] == ConnectionClosed()


# --- limits ------------------------------------------------------------------------------


def test_over_size_message_is_read_to_the_end_then_refused() -> None:
    s = data_session(max_size=100)
    s.feed(b"x" * 60 + b"\r\n")
    s.feed(b"y" * 60 + b"\r\n")
    s.feed(b"MAIL FROM:<evil@example.org>\r\n" * 5 + b".\r\nQUIT\r\n")
    assert len(s.body()) <= 100
    assert [e for e in s.commands() if isinstance(e, EndOfData)] == [EndOfData(C552_MESSAGE_TOO_BIG, False)]
    assert s.replies()[-2:] == [C552_MESSAGE_TOO_BIG.to_bytes(), b"221 2.0.0 Bye\r\n"]
    assert not any(isinstance(e, MailFrom) for e in s.events[2:])


def test_size_counts_unstuffed_octets() -> None:
    body = b"..\r\n" * 25  # 100 octets on the wire, 75 unstuffed
    s = data_session(max_size=75).feed(body + b".\r\n")
    assert s.commands()[-1] == EndOfData(None, False)
    assert len(s.body()) == 75


def test_long_data_line_over_1000_is_accepted_up_to_the_hard_limit() -> None:
    line = b"z" * 5000 + b"\r\n"
    s = data_session(max_size=0, hard=8000).feed(line + b".\r\n")
    assert s.body() == line and s.commands()[-1] == EndOfData(None, False)


@pytest.mark.parametrize("split", [False, True])
def test_line_over_hard_limit_is_refused_and_memory_stays_bounded(split: bool) -> None:
    s = data_session(max_size=0, hard=1000)
    if split:
        for _ in range(50):
            s.feed(b"q" * 1000)
            assert s.conn.input_buffered <= 2000
        s.feed(b"\r\nnext\r\n.\r\n")
    else:
        s.feed(b"ok\r\n" + b"q" * 50_000 + b"\r\nnext\r\n.\r\n")
    assert s.commands()[-1] == EndOfData(C552_LINE_TOO_LONG, False)
    assert s.conn.state is ServerState.COMMAND


def test_discard_data_reads_to_the_end() -> None:
    def policy(conn: ServerConnection, ev: ServerEvent) -> Reply | None:
        if isinstance(ev, DataChunk):
            conn.discard_data(C451_LOCAL_ERROR)
        return default_reply(conn, ev)

    s = Session(ServerConnection(0), policy).feed(START, b"a\r\n", b"b\r\nMAIL FROM:<x@y.z>\r\n.\r\n")
    assert s.body() == b"a\r\n"
    assert s.commands()[-1] == EndOfData(C451_LOCAL_ERROR, False)
    assert s.replies()[-1] == C451_LOCAL_ERROR.to_bytes()
    assert not s.conn.in_transaction


# --- BDAT (RFC 3030) -----------------------------------------------------------------------


def test_bdat_chunks() -> None:
    s = Session().feed(EHLO_MAIL_RCPT + b"BDAT 5\r\nab\r\n.BDAT 3 LAST\r\nxyzQUIT\r\n")
    assert s.commands()[3:] == [
        Bdat(5, False),
        BdatChunkEnd(False, None),
        Bdat(3, True),
        BdatChunkEnd(True, None),
        Quit(),
        ConnectionClosed(),
    ]
    assert s.body() == b"ab\r\n.xyz"  # raw: no unstuffing, no line rules
    assert s.codes()[-3:] == [250, 250, 221]
    assert not s.conn.in_transaction


def test_bdat_zero_last() -> None:
    s = Session().feed(EHLO_MAIL_RCPT + b"BDAT 4\r\nabcdBDAT 0 LAST\r\n")
    assert s.commands()[-2:] == [Bdat(0, True), BdatChunkEnd(True, None)]
    assert s.body() == b"abcd"


def test_bdat_chunk_split_across_reads() -> None:
    s = Session().feed(EHLO_MAIL_RCPT + b"BDAT 10 LAST\r\n0123", b"45", b"6789NOOP\r\n")
    assert s.body() == b"0123456789"
    assert s.commands()[-2:] == [BdatChunkEnd(True, None), s.commands()[-1]]
    assert s.codes()[-1] == 250


def test_bdat_over_size_discards_until_last() -> None:
    s = Session(ServerConnection(10)).feed(
        EHLO_MAIL_RCPT + b"BDAT 8\r\n12345678BDAT 8\r\nabcdefghBDAT 4 LAST\r\nwxyz"
    )
    ends = [e for e in s.events if isinstance(e, BdatChunkEnd)]
    assert ends == [
        BdatChunkEnd(False, None),
        BdatChunkEnd(False, C552_MESSAGE_TOO_BIG),
        BdatChunkEnd(True, C552_MESSAGE_TOO_BIG),
    ]
    assert s.body() == b"12345678"
    assert not s.conn.in_transaction


def test_bdat_without_rcpt_reads_and_drops_the_chunk() -> None:
    s = Session().feed(b"EHLO c\r\nBDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
    assert [type(e) for e in s.events] == [type(s.events[0]), CommandRejected, type(s.events[2])]
    assert s.replies()[-2:] == [b"503 5.5.1 Bad sequence of commands\r\n", b"250 2.0.0 OK\r\n"]


def test_bdat_with_mail_but_no_rcpt() -> None:
    s = Session().feed(b"EHLO c\r\nMAIL FROM:<>\r\nBDAT 3 LAST\r\nabc")
    assert s.replies()[-1] == b"554 5.5.1 No valid recipients\r\n"


def test_data_after_bdat_is_a_sequence_error() -> None:
    s = Session().feed(EHLO_MAIL_RCPT + b"BDAT 1\r\nxDATA\r\n")
    assert s.replies()[-1] == b"503 5.5.1 Bad sequence of commands\r\n"
    assert s.commands()[-1] == CommandRejected(s.commands()[-1].reply, b"DATA\r\n")  # type: ignore[union-attr]


@pytest.mark.parametrize("line", [b"BDAT\r\n", b"BDAT x\r\n", b"BDAT 5 FIRST\r\n", b"BDAT -1\r\n"])
def test_bdat_bad_size_closes_with_421_after_the_replies_due(line: bytes) -> None:
    s = Session().feed(EHLO_MAIL_RCPT + line + b"RSET\r\n")
    assert s.replies()[-1] == C421_BDAT_SYNTAX.to_bytes()  # RFC 5321 §3.8
    assert s.codes() == [250, 250, 250, 421]  # EHLO, MAIL, RCPT, then the fatal line; no RSET
    assert s.closed and s.conn.state is ServerState.CLOSED


def test_bdat_bad_size_after_a_pipelined_message_keeps_its_250() -> None:
    s = Session().feed(EHLO_MAIL_RCPT + b"DATA\r\nhi\r\n.\r\nBDAT x LAST\r\nhi")
    assert s.codes() == [250, 250, 250, 354, 250, 421]
    assert s.replies()[-2] == C250_QUEUED.to_bytes()


def test_error_reply_to_a_chunk_discards_later_chunks() -> None:
    def policy(conn: ServerConnection, ev: ServerEvent) -> Reply | None:
        if isinstance(ev, BdatChunkEnd) and ev.error is None:
            return C451_LOCAL_ERROR
        return default_reply(conn, ev)

    s = Session(ServerConnection(0), policy).feed(EHLO_MAIL_RCPT + b"BDAT 2\r\nabBDAT 2 LAST\r\ncd")
    assert s.body() == b"ab"
    assert [e for e in s.events if isinstance(e, BdatChunkEnd)][-1] == BdatChunkEnd(True, C451_LOCAL_ERROR)


def test_data_command_event() -> None:
    s = data_session()
    assert Data() in s.commands()
    assert s.conn.state is ServerState.DATA


# --- BDAT and bare line ends (RFC 5321 §2.3.8, the same rule as DATA) -------------------------


def bdat(*chunks: bytes, mail: bytes = b"MAIL FROM:<a@example.org>\r\n") -> bytes:
    out = b"EHLO c\r\n" + mail + b"RCPT TO:<b@example.com>\r\n"
    for i, chunk in enumerate(chunks):
        out += b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if i == len(chunks) - 1 else b"") + chunk
    return out


def last_end(s: Session) -> BdatChunkEnd:
    ends = [e for e in s.events if isinstance(e, BdatChunkEnd)]
    assert ends and ends[-1].last
    return ends[-1]


@pytest.mark.parametrize(
    "chunks",
    [
        (b"a\nb\r\n",),  # bare LF
        (b"a\rb\r\n",),  # bare CR
        (b"x\r\n", b"a\n.\r\n"),  # the smuggling sequence, in a later chunk
        (b"line\r",),  # a CR at the very end of the message
        (b"line\r", b""),  # ... even with an empty LAST chunk after it
        (b"line\r", b"x\n"),  # a CR ending one chunk, not followed by LF
        (b"ok\r\n", b"\n"),  # an LF starting a chunk after a CRLF
    ],
)
def test_bdat_with_a_bare_newline_is_flagged_and_refused(chunks: tuple[bytes, ...]) -> None:
    s = Session().feed(bdat(*chunks))
    assert last_end(s).bare_newline
    assert s.replies()[-1] == C550_BARE_NEWLINE.to_bytes()


@pytest.mark.parametrize(
    "chunks",
    [
        (b"a\r\nb\r\n",),
        (b"a\r", b"\nb\r\n"),  # CR at the end of one chunk, LF at the start of the next: a CRLF
        (b"a\r", b"\n", b"b\r", b"\n"),
        (b"a\r\n", b"", b"b\r\n"),
        (b"no line end at all",),
    ],
)
def test_bdat_crlf_across_chunks_is_not_bare(chunks: tuple[bytes, ...]) -> None:
    s = Session().feed(bdat(*chunks))
    assert not last_end(s).bare_newline
    assert s.replies()[-1] == C250_QUEUED.to_bytes()


def test_bdat_bare_newline_belongs_to_one_transaction() -> None:
    again = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n"
    s = Session().feed(bdat(b"a\nb\r\n"), again + b"BDAT 4 LAST\r\nok\r\n")
    assert s.codes()[-4:] == [550, 250, 250, 250]  # the next message starts clean
    # A CR that ends one message does not pair with an LF that starts the next.
    s = Session().feed(bdat(b"ab\r"), again + b"BDAT 5 LAST\r\n\nok\r\n")
    assert s.codes()[-4:] == [550, 250, 250, 550]


def test_bdat_binarymime_content_is_not_checked() -> None:
    s = Session().feed(bdat(b"\x00\n\r\xff", mail=b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n"))
    assert not last_end(s).bare_newline  # RFC 3030 §3: binary content has no lines


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"x", b"\r")), min_size=1, max_size=5),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_bdat_bare_newline_depends_on_the_content_only(chunks: list[bytes], cuts: list[int]) -> None:
    # Whatever the chunk boundaries and the read boundaries, the flag is DATA's rule applied to
    # the whole content: every CR and every LF is part of a CRLF.
    content = b"".join(chunks)
    expected = not (content.count(b"\r\n") == content.count(b"\r") == content.count(b"\n"))
    data = bdat(*chunks)
    points = sorted({c % (len(data) + 1) for c in cuts})
    s = Session(ServerConnection(0))
    for a, b in zip([0, *points], [*points, len(data)]):
        s.feed(data[a:b])
    assert last_end(s).bare_newline == expected
