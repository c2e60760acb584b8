"""Fuzzing the three sans-IO protocol cores (issue 14): SMTP, IMAP and POP3.

Each core gets hostile input, arbitrary octets or "soups" of real, broken and half-written
commands glued with any line end, cut into arbitrary chunks. It is driven by an application
that follows the core's rules and answers with choices drawn by Hypothesis. Then:

1. nothing raises except the documented protocol errors: the IMAP parser's ``ParseError``
   (answered ``BAD``); the SMTP and POP3 cores answer every peer mistake themselves and raise
   nothing at all;
2. every complete command line is answered, in order (a reply, or an event the session answers);
3. what a core buffers stays bounded by its line and literal limits, whatever arrives;
4. where the application's answers do not depend on it, chunking changes nothing.

Bounded in time: max_examples and a per-example deadline keep the whole file to a few seconds.
For a deeper hunt, set ``PIGEON_FUZZ_EXAMPLES`` (e.g. 10000: a few minutes).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pigeon.proto.imap import events as imap_ev
from pigeon.proto.imap.connection import ImapServerConnection, literal_announcement
from pigeon.proto.imap.errors import ParseError
from pigeon.proto.imap.parser import parse_command
from pigeon.proto.pop3 import events as pop3_ev
from pigeon.proto.pop3.commands import split_verb as pop3_split_verb
from pigeon.proto.pop3.responses import Continuation, MultiLine, Response
from pigeon.proto.pop3.server import ServerConnection as Pop3Connection
from pigeon.proto.smtp import events as smtp_ev
from pigeon.proto.smtp.commands import split_verb as smtp_split_verb
from pigeon.proto.smtp.reply import (
    C214_HELP,
    C221_BYE,
    C250_OK,
    C252_CANNOT_VRFY,
    C354_START_INPUT,
    C451_LOCAL_ERROR,
    C452_TOO_MANY_RECIPIENTS,
    C502_NOT_IMPLEMENTED,
    C550_BARE_NEWLINE,
    C550_MAILBOX_UNAVAILABLE,
    C552_MESSAGE_TOO_BIG,
    C554_TRANSACTION_FAILED,
    Reply,
)
from pigeon.proto.smtp.server import ESMTP_LINE_ALLOWANCE, NEED_DATA, ServerConnection, ServerState

FUZZ = settings(
    max_examples=int(os.environ.get("PIGEON_FUZZ_EXAMPLES", "300")),
    deadline=timedelta(seconds=2),  # one example is milliseconds; a blow-up is caught here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- input strategies --------------------------------------------------------------------------

ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"]


def soup(words: Sequence[bytes], max_items: int = 40) -> st.SearchStrategy[bytes]:
    """Commands from ``words`` and random octets, each followed by any line end."""
    item = st.tuples(
        st.one_of(st.sampled_from(words), st.binary(max_size=40), st.sampled_from(words).map(lambda w: w * 3)),
        st.sampled_from(ENDINGS),
    ).map(lambda t: t[0] + t[1])
    return st.lists(item, max_size=max_items).map(b"".join)


def mutated(words: Sequence[bytes], tokens: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A real command with a few of its space-separated words dropped, doubled or replaced, or
    with a token inserted: mostly well-formed input that reaches deep into a parser."""

    def mutate(word: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
        parts = word.split(b" ")
        for op, at, token in ops:
            i = at % (len(parts) + 1)
            if op == 0:
                parts.insert(i, token)
            elif parts and op == 1:
                del parts[i % len(parts)]
            elif parts and op == 2:
                parts[i % len(parts)] = token
            elif parts:
                parts.insert(i, parts[i % len(parts)])
        return b" ".join(parts)

    op = st.tuples(st.integers(0, 3), st.integers(0, 50), tokens)
    return st.builds(mutate, st.sampled_from(words), st.lists(op, min_size=1, max_size=4))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (taken modulo its length); never an empty piece (b"" is EOF)."""
    at = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(at, at[1:]) if b > a]


CUTS = st.lists(st.integers(min_value=0, max_value=20_000), max_size=25)
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)

# --- SMTP ----------------------------------------------------------------------------------------

SMTP_MAX_SIZE = 3000
SMTP_HARD_LINE = 300
SMTP_AUTH_LINE = 700
#: After NEED_DATA the core holds at most one incomplete line: a command line (MAIL/RCPT get the
#: ESMTP allowance), a SASL line, or the last line of DATA content.
SMTP_BUFFER_BOUND = max(512 + ESMTP_LINE_ALLOWANCE, SMTP_AUTH_LINE, SMTP_HARD_LINE + 2)

SMTP_WORDS = [
    b"EHLO client.example", b"HELO x", b"EHLO", b"ehlo [192.0.2.1]", b"EHLO evil\xc2\x85x",
    b"MAIL FROM:<a@example.org>", b"MAIL FROM:<> SIZE=100 BODY=8BITMIME SMTPUTF8",
    b"MAIL FROM:<a@b.example> BODY=BINARYMIME", b"MAIL FROM:<bad", b"MAIL FROM:<a@b> SIZE=99999999999",
    b"MAIL FROM:<j\xc3\xb6rg@ex.org> SMTPUTF8", b"MAIL FROM:<a@b> RET=HDRS ENVID=x+2By AUTH=<>",
    b"RCPT TO:<b@example.com>", b"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.com",
    b"RCPT TO:<postmaster>", b"RCPT TO:<", b"RCPT TO:<\"q u\"@[IPv6:2001:db8::1]>", b"RCPT TO:<@a,@b:c@d>",
    b"DATA", b"DATA x", b"BDAT 0", b"BDAT 5", b"BDAT 3 LAST", b"BDAT 0 LAST", b"BDAT 99999999999999999999999",
    b"BDAT x LAST", b"BDAT -1", b"RSET", b"NOOP", b"NOOP x", b"QUIT", b"VRFY a", b"EXPN l", b"HELP", b"HELP x",
    b"STARTTLS", b"AUTH PLAIN", b"AUTH PLAIN AGFAYg==", b"AUTH LOGIN", b"AUTH =", b"AUTH X Y Z", b"*",
    b"AGFAYg==", b".", b"..", b".\r\n.", b"", b" ", b"GET / HTTP/1.1", b"TURN", b"\x00", b"\xff\xfe",
    b"x" * 600, b"MAIL FROM:<a@b> " + b"X=Y " * 300, "ſtarttlſ".encode(), "quıt".encode(), "BDAT 1 laſt".encode(),
]


_SMTP_ADDRESS = st.one_of(
    st.just(b"<>"),
    st.builds(
        lambda local, dom: b"<" + local + b"@" + dom + b">",
        st.sampled_from([b"a", b"\"q u\\\"x\"", b"j\xc3\xb6rg", b"", b"a..b", b".a", b"x" * 70, b"a+b=c"]),
        st.sampled_from([b"example.org", b"[192.0.2.1]", b"[IPv6:2001:db8::1]", b"[IPv6:zz]", b"[1.2.3]",
                         b"ex\xc3\xa4mple.test", b"-bad-.example", b"a" * 70 + b".example", b"", b"x."]),
    ),
    st.sampled_from([b"<@a.example,@b.example:c@d.example>", b"<postmaster>", b"<Postmaster>", b"c@d", b"<c@d"]),
)
_SMTP_PARAM = st.tuples(
    st.sampled_from([b"SIZE", b"BODY", b"SMTPUTF8", b"RET", b"ENVID", b"AUTH", b"NOTIFY", b"ORCPT", b"X", b"size"]),
    st.sampled_from([b"", b"=", b"=1000", b"=99999999999999999999", b"=8BITMIME", b"=BINARYMIME", b"=7bit", b"=FULL",
                     b"=HDRS", b"=x+2By", b"=+ZZ", b"=+", b"=<>", b"=NEVER", b"=SUCCESS,FAILURE,DELAY",
                     b"=NEVER,SUCCESS", b"=rfc822;a@b", b"=utf-8;a\\x{E9}b", b"=rfc822;", b"=\xc3\xa9"]),
).map(lambda kv: kv[0] + kv[1])
SMTP_STRUCTURED = st.builds(
    lambda verb, addr, params: verb + addr + b"".join(b" " + p for p in params),
    st.sampled_from([b"MAIL FROM:", b"RCPT TO:", b"mail from: ", b"RCPT TO: ", b"MAIL FROM:<a@b> "]),
    _SMTP_ADDRESS,
    st.lists(_SMTP_PARAM, max_size=5),
)


def _pick(rnd: random.Random, *replies: Reply) -> Reply:
    return replies[rnd.randrange(len(replies))]


def smtp_answer(ev: smtp_ev.ServerEvent, rnd: random.Random, *, tls: bool) -> Reply | None:
    """A varied but rule-abiding application: every event that needs a reply gets one."""
    match ev:
        case smtp_ev.Helo() | smtp_ev.Ehlo():
            return _pick(rnd, C250_OK, C250_OK, C550_MAILBOX_UNAVAILABLE)
        case smtp_ev.MailFrom():
            return _pick(rnd, C250_OK, C250_OK, C550_MAILBOX_UNAVAILABLE)
        case smtp_ev.RcptTo():
            return _pick(rnd, C250_OK, C250_OK, C550_MAILBOX_UNAVAILABLE, C452_TOO_MANY_RECIPIENTS)
        case smtp_ev.Data():
            return _pick(rnd, C354_START_INPUT, C354_START_INPUT, C554_TRANSACTION_FAILED)
        case smtp_ev.EndOfData(error=error, bare_newline=bare) | smtp_ev.BdatChunkEnd(error=error, bare_newline=bare):
            if error is not None:
                return error
            return C550_BARE_NEWLINE if bare else _pick(rnd, C250_OK, C250_OK, C451_LOCAL_ERROR)
        case smtp_ev.Rset() | smtp_ev.Noop():
            return C250_OK
        case smtp_ev.Vrfy():
            return C252_CANNOT_VRFY
        case smtp_ev.Expn():
            return C502_NOT_IMPLEMENTED
        case smtp_ev.Help():
            return C214_HELP
        case smtp_ev.Quit():
            return C221_BYE
        case smtp_ev.StartTls():
            return _pick(rnd, Reply(220, "2.0.0", "Ready"), Reply(454, "4.7.0", "No TLS")) if tls else Reply(
                454, "4.7.0", "No TLS")
        case smtp_ev.Auth():
            return _pick(rnd, Reply(334, "", ""), Reply(535, "5.7.8", "No"), Reply(504, "5.5.4", "No such mechanism"))
        case smtp_ev.AuthResponse():
            return _pick(rnd, Reply(334, "", ""), Reply(235, "2.7.0", "Ok"), Reply(535, "5.7.8", "No"),
                         Reply(501, "5.0.0", "Cancelled"))
    return None  # DataChunk, Bdat, CommandRejected, ConnectionClosed


SmtpAnswer = Callable[[smtp_ev.ServerEvent, random.Random], Reply | None]


def smtp_run(chunks: list[bytes], seed: int, *, tls: bool = True, discard: bool = True,
             greeting: Reply | None = None, answer: SmtpAnswer | None = None,
             ) -> tuple[list[smtp_ev.ServerEvent], bytes]:
    """Feed ``chunks`` then EOF; return the events and everything the core sent."""
    rnd = random.Random(seed)
    conn = ServerConnection(SMTP_MAX_SIZE, hard_line_limit=SMTP_HARD_LINE, auth_line_limit=SMTP_AUTH_LINE)
    conn.send(greeting or Reply(220, "", "mx.example ESMTP"))
    out = bytearray(conn.data_to_send())
    events: list[smtp_ev.ServerEvent] = []
    pending = list(chunks)
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            assert conn.input_buffered <= SMTP_BUFFER_BOUND, conn.input_buffered
            out += conn.data_to_send()
            conn.receive_data(pending.pop(0) if pending else b"")
            continue
        events.append(ev)
        if isinstance(ev, smtp_ev.ConnectionClosed):
            assert conn.state is ServerState.CLOSED
            out += conn.data_to_send()  # the replies already due, then the close (rule 1 of server.py)
            return events, bytes(out)
        if isinstance(ev, smtp_ev.DataChunk):
            if discard and rnd.random() < 0.05:
                conn.discard_data(C552_MESSAGE_TOO_BIG)
            continue
        reply = answer(ev, rnd) if answer is not None else smtp_answer(ev, rnd, tls=tls)
        if reply is not None:
            conn.send(reply)
            if isinstance(ev, smtp_ev.StartTls) and reply.code == 220:
                conn.start_tls()


def smtp_codes(out: bytes) -> list[int]:
    """The codes of the complete replies after the greeting (multi-line replies count once)."""
    return [int(m) for m in re.findall(rb"^(\d{3}) ", out, re.MULTILINE)][1:]


@FUZZ
@given(st.binary(max_size=3000), CUTS, SEEDS)
def test_smtp_core_survives_arbitrary_octets(data: bytes, cuts: list[int], seed: int) -> None:
    events, _ = smtp_run(cut(data, cuts), seed)
    assert isinstance(events[-1], smtp_ev.ConnectionClosed)


@FUZZ
@given(soup(SMTP_WORDS), st.lists(st.one_of(SMTP_STRUCTURED, mutated(SMTP_WORDS, _SMTP_PARAM)), max_size=8), CUTS,
       SEEDS, st.booleans())
def test_smtp_core_survives_command_soup(
    data: bytes, structured: list[bytes], cuts: list[int], seed: int, refused: bool
) -> None:
    greeting = Reply(554, "5.7.1", "Go away") if refused else None  # RFC 5321 §3.1: QUIT only
    data = b"EHLO c\r\n" + b"".join(line + b"\r\n" for line in structured) + data
    events, out = smtp_run(cut(data, cuts), seed, greeting=greeting)
    assert isinstance(events[-1], smtp_ev.ConnectionClosed)
    if refused:
        assert all(code == 221 or code >= 500 or code == 421 for code in smtp_codes(out))


@FUZZ
@given(soup(SMTP_WORDS, max_items=25), CUTS, SEEDS)
def test_smtp_chunking_changes_nothing(data: bytes, cuts: list[int], seed: int) -> None:
    # STARTTLS is refused here: after a 220 the core drops what was received after the command,
    # and how much that is depends on the chunks, by design (CVE-2011-0411).
    whole = smtp_run([data] if data else [], seed, tls=False, discard=False)
    assert smtp_run(cut(data, cuts), seed, tls=False, discard=False)[1] == whole[1]


#: Verbs after which the lines that follow are not commands (data, SASL) or the session ends.
_SMTP_NOT_ONE_LINE = frozenset({"BDAT", "QUIT", "GET", "POST", "PUT", "HEAD", "CONNECT", "OPTIONS"})
_LINE = st.binary(max_size=700).map(lambda b: b.replace(b"\n", b""))


def _smtp_one_line_command(line: bytes) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return smtp_split_verb(text)[0] not in _SMTP_NOT_ONE_LINE


@FUZZ
@given(
    st.lists(st.tuples(st.one_of(st.sampled_from(SMTP_WORDS), _LINE), st.sampled_from([b"\r\n", b"\n"])), max_size=30),
    CUTS,
)
def test_smtp_every_complete_line_gets_one_reply(lines: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    lines = [(text, end) for text, end in lines if b"\n" not in text and _smtp_one_line_command(text)]
    data = b"".join(text + end for text, end in lines)

    def answer(ev: smtp_ev.ServerEvent, rnd: random.Random) -> Reply | None:
        if isinstance(ev, (smtp_ev.Data, smtp_ev.Auth, smtp_ev.StartTls)):
            return Reply(554, "5.5.1", "Not now")  # no data mode, no SASL line, no TLS
        return smtp_answer(ev, rnd, tls=False)

    events, out = smtp_run(cut(data, cuts), 0, answer=answer)
    assert len(smtp_codes(out)) == len(lines), (lines, out)
    assert isinstance(events[-1], smtp_ev.ConnectionClosed)


# --- IMAP ----------------------------------------------------------------------------------------

IMAP_LINE = 256
IMAP_LITERAL = 1024
#: After next_event() gave None: an incomplete line, or a literal still arriving.
IMAP_BUFFER_BOUND = max(IMAP_LINE, IMAP_LITERAL)

IMAP_WORDS = [
    b"a1 LOGIN user pass", b"a1 LOGIN {4}", b"fred {3}", b"pw!", b"a2 SELECT INBOX", b"a2 EXAMINE \"x\" (CONDSTORE)",
    b"a3 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])", b"a3 UID FETCH 1,3:5 BINARY[1.2]<0.10>",
    b"a3 FETCH * (BODY[1.2.MIME] RFC822.SIZE) (CHANGEDSINCE 5 VANISHED)", b"a4 SEARCH CHARSET UTF-8 TEXT {3}",
    b"a4 SEARCH OR FROM a (TO b SINCE 1-Jan-2020) NOT DELETED UID 1:*", b"a4 UID SEARCH RETURN (MIN MAX) $",
    b"a4 SEARCH CHARSET KOI8-R x", b"a5 APPEND INBOX {5+}", b"hello",
    b"a6 APPEND INBOX (\\Seen) \"1-Jan-2020 00:00:00 +0000\" {10}", b"a6 APPEND INBOX ~{3}",
    b"a7 UID STORE 1 +FLAGS.SILENT (\\Deleted $Junk)", b"a7 STORE 1:2 (UNCHANGEDSINCE 3) FLAGS ()",
    b"a8 LIST \"\" *", b"a8 LIST (SUBSCRIBED) \"\" (\"a\" \"b%\") RETURN (STATUS (MESSAGES))",
    b"a9 LIST \"\" \"*%*%*%x\"",
    b"a10 IDLE", b"DONE", b"a11 AUTHENTICATE PLAIN", b"a11 AUTHENTICATE PLAIN =", b"AGFAYg==", b"*",
    b"a12 ID (\"name\" \"x\" \"version\" NIL)", b"a12 ID NIL", b"a13 STATUS INBOX (MESSAGES UIDNEXT SIZE)",
    b"{99999999999999999999999}", b"a14 NOOP {99999999999999999999999+}", b"a16 ENABLE QRESYNC UTF8=ACCEPT",
    b"a17 SELECT INBOX (QRESYNC (1 2 1:5 (1,3 2,4)))", b"a18 CREATE &ZeVnLIqe-", b"a18 CREATE &Jjo", b"a19 RENAME a b",
    b"a20 STARTTLS", b"* BAD", b"+ x", b"a21 COPY 1:3,5 Trash", b"a22 MOVE 2 \"x\\\"y\"", b"a23 EXPUNGE",
    b"a24 UID EXPUNGE 1:*", b"a25 UID BOGUS", b"a26 CAPABILITY", b"a27 LOGOUT", b"a28 NAMESPACE", b"a29 CLOSE",
    b"a30 UNSELECT", b"a31 SUBSCRIBE \"\"", b"a32 LSUB \"\" %", b"a33 DELETE INBOX", b"a34 CHECK", b"~{3}",
    b"a35 FETCH 1 (BODY[HEADER.FIELDS.NOT ({5}", b"a36 \"quoted\\", b"a37 FETCH 4294967296 FLAGS",
    b"a38 FETCH 1 BODY[" + b"1." * 100 + b"1]", b"a39 SEARCH " + b"(" * 200 + b"ALL" + b")" * 200,
    b"a40 SEARCH " + b"NOT " * 300 + b"ALL", b"a41 STORE 1 FLAGS (" + b"\\Seen " * 60 + b")", b"", b"\x00\xff",
]


def _imap_literal(payload: bytes, kind: bytes) -> bytes:
    return kind.replace(b"N", str(len(payload)).encode()) + b"\r\n" + payload


_IMAP_TOKEN = st.one_of(
    st.sampled_from([
        b"INBOX", b"NIL", b"*", b"1", b"1:*", b"2,4:7", b"$", b"0", b"4294967295", b"4294967296", b"\\Seen",
        b"\\Deleted", b"$Junk", b"FLAGS", b"+FLAGS.SILENT", b"BODY[]", b"BODY.PEEK[HEADER]", b"BINARY[1]",
        b"BODY[1.2.TEXT]<0.100>", b"<1.2>", b"RFC822", b"ENVELOPE", b"UID", b"ALL", b"FAST", b"TEXT", b"FROM",
        b"SINCE", b"1-Jan-2020", b"31-Feb-2020", b"\"1-Jan-2020 00:00:00 +0000\"", b"OR", b"NOT", b"CHARSET",
        b"UTF-8", b"RETURN", b"(", b")", b"[", b"]", b"{", b"}", b"\"\"", b"\"a b\"", b"\"\\\"\"", b"\"\\x\"",
        b"\"", b"%", b"&ZeVnLIqe-", b"&-", b"&", b"MODSEQ", b"CHANGEDSINCE", b"UNCHANGEDSINCE", b"VANISHED",
        b"QRESYNC", b"CONDSTORE", b"(MESSAGES UIDNEXT UNSEEN SIZE)", b"SUBSCRIBED", b"SPECIAL-USE", b"~",
        b"\xc3\xa4", b"\x00", b"\x7f", b"-1", b"1.2", b"HEADER.FIELDS", b"(SUBJECT)", b"MIME", b"LARGER",
        b"SMALLER", b"KEYWORD", b"HEADER", b"X-GM-RAW",
    ]),
    st.builds(_imap_literal, st.binary(max_size=20), st.sampled_from([b"{N}", b"{N+}", b"~{N}"])),
)
IMAP_STRUCTURED = st.builds(
    lambda tag, name, toks: tag + b" " + name + b"".join(b" " + t for t in toks),
    st.sampled_from([b"a1", b"a1", b"a1", b"a1", b"A.2", b"t]", b"+x", b"*"]),
    st.sampled_from([
        b"FETCH", b"UID FETCH", b"STORE", b"UID STORE", b"SEARCH", b"UID SEARCH", b"COPY", b"MOVE", b"UID MOVE",
        b"EXPUNGE", b"UID EXPUNGE", b"SELECT", b"EXAMINE", b"LIST", b"LSUB", b"STATUS", b"APPEND", b"CREATE",
        b"RENAME", b"DELETE", b"SUBSCRIBE", b"LOGIN", b"AUTHENTICATE", b"ENABLE", b"ID", b"NOOP", b"UID",
    ]),
    st.lists(_IMAP_TOKEN, max_size=12),
)


def imap_run(chunks: list[bytes], seed: int, *, tls: bool = True, raw_lines: bool = True) -> list[imap_ev.ImapEvent]:
    """Feed ``chunks`` then EOF through the framing core and the parser; return the events.
    ``raw_lines``: ask for a raw line after AUTHENTICATE and IDLE, as the session may."""
    rnd = random.Random(seed)
    conn = ImapServerConnection(max_line=IMAP_LINE, max_literal=IMAP_LITERAL, literal_plus=rnd.random() < 0.5)
    events: list[imap_ev.ImapEvent] = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (ev := conn.next_event()) is not None:
            events.append(ev)
            if isinstance(ev, imap_ev.ConnectionClosed):
                return events
            if not isinstance(ev, imap_ev.Command):
                continue
            try:
                parse_command(ev)
            except ParseError:
                continue  # tag BAD reason: the documented error (CharsetError is one too)
            # As the session does after these commands (AUTHENTICATE, IDLE, STARTTLS):
            if ev.name in ("AUTHENTICATE", "IDLE") and raw_lines and rnd.random() < 0.7:
                conn.expect_line()
                if rnd.random() < 0.1:
                    conn.cancel_line()
            elif ev.name == "STARTTLS" and tls and rnd.random() < 0.5:
                conn.start_tls()
        assert conn.input_buffered <= IMAP_BUFFER_BOUND, conn.input_buffered
    raise AssertionError("no ConnectionClosed after EOF")


@FUZZ
@given(st.binary(max_size=3000), CUTS, SEEDS)
def test_imap_core_survives_arbitrary_octets(data: bytes, cuts: list[int], seed: int) -> None:
    imap_run(cut(data, cuts), seed)


@FUZZ
@given(soup(IMAP_WORDS), st.lists(st.one_of(IMAP_STRUCTURED, mutated(IMAP_WORDS, _IMAP_TOKEN)), max_size=10),
       CUTS, SEEDS)
def test_imap_core_survives_command_soup(data: bytes, structured: list[bytes], cuts: list[int], seed: int) -> None:
    imap_run(cut(b"".join(line + b"\r\n" for line in structured) + data, cuts), seed)


@FUZZ
@given(soup(IMAP_WORDS, max_items=25), CUTS, SEEDS)
def test_imap_chunking_changes_nothing(data: bytes, cuts: list[int], seed: int) -> None:
    assert imap_run(cut(data, cuts), seed, tls=False) == imap_run([data] if data else [], seed, tls=False)


@FUZZ
@given(
    st.lists(st.tuples(st.one_of(st.sampled_from(IMAP_WORDS), _LINE), st.sampled_from([b"\r\n", b"\n"])), max_size=30),
    CUTS,
)
def test_imap_every_complete_line_gets_one_answer(lines: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    def core_line(text: bytes, end: bytes) -> bytes:
        return text[:-1] if end == b"\n" and text.endswith(b"\r") else text  # the core drops a CR

    kept = [(t, e) for t, e in lines if b"\n" not in t and literal_announcement(core_line(t, e)) is None]
    commands = [t for t, e in kept if core_line(t, e)]  # an empty line between commands is skipped
    events = imap_run(cut(b"".join(t + e for t, e in kept), cuts), 0, tls=False, raw_lines=False)
    answered = [e for e in events if isinstance(e, (imap_ev.Command, imap_ev.BadCommand))]
    assert len(answered) == len(commands), (kept, events)


# --- POP3 ----------------------------------------------------------------------------------------

POP3_AUTH_LINE = 600
POP3_BUFFER_BOUND = max(255, POP3_AUTH_LINE)  # RFC 2449 §4: 255-octet command lines

POP3_WORDS = [
    b"USER alice", b"USER", b"PASS secret with spaces", b"PASS", b"APOP a b", b"AUTH", b"AUTH PLAIN",
    b"AUTH PLAIN =", b"AUTH PLAIN AGFAYg==", b"AUTH X Y Z", b"*", b"AGFAYg==", b"CAPA", b"STLS", b"STAT",
    b"LIST", b"LIST 1", b"LIST x", b"LIST 1 2", b"RETR 1", b"RETR 99999999999", b"DELE 1", b"NOOP", b"RSET",
    b"QUIT", b"TOP 1 5", b"TOP 1", b"UIDL", b"UIDL 0", b"uidl 1", b"\tuser  b\xc3\xb6b", b"", b" ",
    b"x" * 400, b"\xff\xfe", b"USER " + b"a" * 300, "quıt".encode(), "ſtls".encode(),
]


Pop3Answer = Response | MultiLine | Continuation


def pop3_answer(ev: pop3_ev.Command, rnd: random.Random) -> Pop3Answer:
    ok, err = Response(True, "ok"), Response(False, "no")
    body = MultiLine(ok, b"line\r\n.dot\r\n")
    choices: list[Pop3Answer] = [ok, err]
    match ev:
        case pop3_ev.Capa() | pop3_ev.Retr() | pop3_ev.Top() | pop3_ev.List(msg=None) | pop3_ev.Uidl(msg=None):
            choices = [body, ok, err]
        case pop3_ev.Auth(mechanism=""):
            choices = [body, err]
        case pop3_ev.Auth() | pop3_ev.AuthResponse():
            choices = [Continuation(""), ok, err]
    return choices[rnd.randrange(len(choices))]


def pop3_run(chunks: list[bytes], seed: int, *, tls: bool = True,
             answer: Callable[[pop3_ev.Command, random.Random], Pop3Answer] = pop3_answer,
             ) -> tuple[list[pop3_ev.Event], bytes]:
    rnd = random.Random(seed)
    conn = Pop3Connection(max_auth_line=POP3_AUTH_LINE, tls_active=rnd.random() < 0.2)
    conn.send(Response(True, "POP3 ready"))
    out = bytearray(conn.data_to_send())
    events: list[pop3_ev.Event] = []
    pending = list(chunks)
    while True:
        ev = conn.next_event()
        if ev is pop3_ev.NEED_DATA:
            assert conn.input_buffered <= POP3_BUFFER_BOUND, conn.input_buffered
            out += conn.data_to_send()
            conn.receive_data(pending.pop(0) if pending else b"")
            continue
        events.append(ev)
        if isinstance(ev, pop3_ev.ConnectionClosed):
            out += conn.data_to_send()
            return events, bytes(out)
        if isinstance(ev, pop3_ev.CommandRejected):
            continue
        response = answer(ev, rnd)
        conn.send(response)
        if isinstance(ev, pop3_ev.Stls) and isinstance(response, Response) and response.ok:
            if not tls:
                raise AssertionError("the answer function must refuse STLS here")
            conn.start_tls()


@FUZZ
@given(st.binary(max_size=3000), CUTS, SEEDS)
def test_pop3_core_survives_arbitrary_octets(data: bytes, cuts: list[int], seed: int) -> None:
    events, _ = pop3_run(cut(data, cuts), seed)
    assert isinstance(events[-1], pop3_ev.ConnectionClosed)


@FUZZ
@given(soup(POP3_WORDS), CUTS, SEEDS)
def test_pop3_core_survives_command_soup(data: bytes, cuts: list[int], seed: int) -> None:
    events, _ = pop3_run(cut(data, cuts), seed)
    assert isinstance(events[-1], pop3_ev.ConnectionClosed)


def _pop3_no_tls(ev: pop3_ev.Command, rnd: random.Random) -> Pop3Answer:
    return Response(False, "no TLS") if isinstance(ev, pop3_ev.Stls) else pop3_answer(ev, rnd)


@FUZZ
@given(soup(POP3_WORDS, max_items=25), CUTS, SEEDS)
def test_pop3_chunking_changes_nothing(data: bytes, cuts: list[int], seed: int) -> None:
    whole = pop3_run([data] if data else [], seed, tls=False, answer=_pop3_no_tls)
    assert pop3_run(cut(data, cuts), seed, tls=False, answer=_pop3_no_tls) == whole


@FUZZ
@given(
    st.lists(st.tuples(st.one_of(st.sampled_from(POP3_WORDS), _LINE), st.sampled_from([b"\r\n", b"\n"])), max_size=30),
    CUTS,
)
def test_pop3_every_complete_line_gets_one_response(lines: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    def core_line(text: bytes, end: bytes) -> bytes:
        return text[:-1] if end == b"\n" and text.endswith(b"\r") else text

    def quits(text: bytes, end: bytes) -> bool:
        verb = pop3_split_verb(core_line(text, end))
        return verb is not None and verb[0] == "QUIT"

    kept = [(t, e) for t, e in lines if b"\n" not in t and not quits(t, e)]

    def single(ev: pop3_ev.Command, rnd: random.Random) -> Response:
        return Response(False, "no")  # single-line, no TLS, no SASL exchange, no login

    _, out = pop3_run(cut(b"".join(t + e for t, e in kept), cuts), 0, tls=False, answer=single)
    responses = re.findall(rb"^(?:\+OK|-ERR)", out, re.MULTILINE)[1:]  # after the greeting
    assert len(responses) == len(kept), (kept, out)
