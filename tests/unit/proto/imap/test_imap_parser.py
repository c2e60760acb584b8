"""Typed command parsing: every command of issue 5 except SEARCH/FETCH (see their own file)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.imap.commands import (
    Append,
    AppendMessage,
    Authenticate,
    Capability,
    Check,
    Close,
    Copy,
    Create,
    Delete,
    Enable,
    Expunge,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    Move,
    Namespace,
    Noop,
    QresyncParams,
    Rename,
    Select,
    StartTls,
    Status,
    Store,
    Subscribe,
    Unselect,
    Unsubscribe,
)
from pigeon.proto.imap.connection import ImapServerConnection
from pigeon.proto.imap.errors import ParseError
from pigeon.proto.imap.events import Command
from pigeon.proto.imap.parser import parse_command
from pigeon.proto.imap.reader import Atom, LiteralString, Nil, ParenList, QuotedString, tokenize
from pigeon.proto.imap.seqset import STAR, SeqSet, parse_seqset
from tests.unit.proto.imap.imap_harness import frame, parse


def bad(data: bytes) -> str:
    with pytest.raises(ParseError) as e:
        parse(data)
    assert e.value.tag is not None
    return e.value.reason


@pytest.mark.parametrize(
    ("line", "cmd"),
    [
        (b"a CAPABILITY", Capability("a")),
        (b"a noop", Noop("a")),
        (b"a Logout", Logout("a")),
        (b"a STARTTLS", StartTls("a")),
        (b"a NAMESPACE", Namespace("a")),
        (b"a IDLE", Idle("a")),
        (b"a CHECK", Check("a")),
        (b"a CLOSE", Close("a")),
        (b"a UNSELECT", Unselect("a")),
        (b"a EXPUNGE", Expunge("a")),
        (b"a UID EXPUNGE 1:3,7", Expunge("a", parse_seqset("1:3,7"))),
    ],
)
def test_simple_commands(line: bytes, cmd: object) -> None:
    assert parse(line) == cmd


def test_arguments_where_none_allowed() -> None:
    assert "unexpected text" in bad(b"a NOOP extra")
    assert "missing" in bad(b"a UID EXPUNGE")


def test_unknown_commands() -> None:
    assert "unknown command" in bad(b"a FROB x")
    assert "not a command" in bad(b"a UID SELECT INBOX")
    assert "missing command" in bad(b"a")


def test_authenticate_with_and_without_initial_response() -> None:
    assert parse(b"a AUTHENTICATE plain") == Authenticate("a", "PLAIN")
    assert parse(b"a AUTHENTICATE PLAIN AGZyZWQAcHc=") == Authenticate("a", "PLAIN", "AGZyZWQAcHc=")
    assert parse(b"a AUTHENTICATE EXTERNAL =") == Authenticate("a", "EXTERNAL", "=")
    assert "initial response" in bad(b"a AUTHENTICATE PLAIN abc")
    assert "initial response" in bad(b"a AUTHENTICATE PLAIN a=bc")
    assert "AGZy" not in repr(Authenticate("a", "PLAIN", "AGZyZWQAcHc="))


def test_login_forms() -> None:
    assert parse(b"a LOGIN fred secret") == Login("a", "fred", "secret")
    assert parse(b'a LOGIN "fred smith" "p\\"w\\\\"') == Login("a", "fred smith", 'p"w\\')
    assert parse(b"a LOGIN {4+}\r\nfr d {3+}\r\n\xc3\xa9!\r\n") == Login("a", "fr d", "é!")
    assert "secret" not in repr(Login("a", "fred", "secret"))
    assert "missing" in bad(b"a LOGIN fred")
    assert "UTF-8" in bad(b'a LOGIN fred "\xff"')


def test_login_hostile_strings() -> None:
    assert "unterminated" in bad(b'a LOGIN "fred secret')
    assert "NUL" in bad(b'a LOGIN "fr\x00ed" x')
    assert "escape" in bad(b'a LOGIN "fr\\ed" x')
    assert "NUL in literal" in bad(b"a LOGIN {3+}\r\nf\x00d x")
    assert "8-bit" in bad(b"a LOGIN fr\xc3\xa9d x")
    assert bad(b"a LOGIN fred  secret")  # two spaces


def test_enable_and_id() -> None:
    assert parse(b"a ENABLE condstore utf8=accept") == Enable("a", ("CONDSTORE", "UTF8=ACCEPT"))
    assert parse(b"a ID NIL") == Id("a", None)
    assert parse(b'a ID ("name" "mutt" "version" NIL)') == Id("a", (("name", "mutt"), ("version", None)))
    assert parse(b"a ID ()") == Id("a", ())
    # liberal in what we accept (issue 18): spaces inside the parentheses, as aioimaplib sends
    assert parse(b'a ID ( "name" "x" )') == Id("a", (("name", "x"),))
    assert parse(b'a ID (  "name"  "x"   "version" NIL )') == Id("a", (("name", "x"), ("version", None)))
    assert parse(b"a ID ( )") == Id("a", ())
    assert "too long" in bad(b'a ID ("' + b"f" * 31 + b'" "x")')
    many = b" ".join(b'"k%d" "v"' % i for i in range(31))
    assert "too many" in bad(b"a ID (" + many + b")")
    assert bad(b"a ENABLE")


def test_select_examine_and_parameters() -> None:
    assert parse(b"a SELECT inbox") == Select("a", "INBOX")
    assert parse(b'a EXAMINE "Sent Items"') == Select("a", "Sent Items", readonly=True)
    assert parse(b"a SELECT [Gmail]/Sent") == Select("a", "[Gmail]/Sent")
    assert parse(b"a SELECT INBOX (CONDSTORE)") == Select("a", "INBOX", condstore=True)
    got = parse(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
    assert got == Select(
        "a", "INBOX", qresync=QresyncParams(67890007, 20050715194045000, parse_seqset("41,43:211,214:541"))
    )
    got = parse(b"a SELECT INBOX (QRESYNC (1 2 1:* (1:10 101:110)) CONDSTORE)")
    assert isinstance(got, Select) and got.condstore and got.qresync is not None
    assert got.qresync.seq_match == (parse_seqset("1:10"), parse_seqset("101:110"))
    got = parse(b"a SELECT INBOX (QRESYNC (1 2 (1:10 101:110)))")
    assert isinstance(got, Select) and got.qresync == QresyncParams(
        1, 2, None, (parse_seqset("1:10"), parse_seqset("101:110"))
    )
    assert "parameter" in bad(b"a SELECT INBOX (FOO)")
    assert "parameter" in bad(b"a SELECT INBOX (CONDSTORE CONDSTORE)")
    assert "0" in bad(b"a SELECT INBOX (QRESYNC (0 2))")
    assert "missing" in bad(b"a SELECT")


def test_mailbox_management() -> None:
    assert parse(b"a CREATE Archive/2024") == Create("a", "Archive/2024")
    assert parse(b"a CREATE MySent (USE (\\sent))") == Create("a", "MySent", ("\\Sent",))
    assert "special-use" in bad(b"a CREATE X (USE (\\Bogus))")
    assert parse(b"a DELETE &AMk-t&AOk-") == Delete("a", "&AMk-t&AOk-")  # mUTF-7 decoded by the session
    assert parse(b"a RENAME INBOX Old") == Rename("a", "INBOX", "Old")
    assert parse(b'a SUBSCRIBE "a b"') == Subscribe("a", "a b")
    assert parse(b"a UNSUBSCRIBE x") == Unsubscribe("a", "x")
    assert parse(b"a CREATE \xc3\xa9t\xc3\xa9" if False else b'a CREATE "\xc3\xa9t\xc3\xa9"') == Create("a", "été")


def test_list_basic_and_extended() -> None:
    assert parse(b'a LIST "" *') == List("a", "", ("*",))
    assert parse(b"a LIST ~/Mail/ %") == List("a", "~/Mail/", ("%",))
    assert parse(b'a LSUB "" "*"') == Lsub("a", "", "*")
    got = parse(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Sent*") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))')
    assert got == List(
        "a",
        "",
        ("INBOX", "Sent*"),
        frozenset({"SUBSCRIBED", "RECURSIVEMATCH"}),
        return_children=True,
        return_status=("MESSAGES", "UNSEEN"),
        extended=True,
    )
    got = parse(b'a LIST "" % RETURN (SPECIAL-USE SUBSCRIBED)')
    assert isinstance(got, List) and got.return_special_use and got.return_subscribed and got.extended
    assert parse(b'a LIST () "" %') == List("a", "", ("%",), extended=True)
    assert "RECURSIVEMATCH" in bad(b'a LIST (RECURSIVEMATCH) "" %')
    assert "selection" in bad(b'a LIST (BOGUS) "" %')
    assert "return option" in bad(b'a LIST "" % RETURN (BOGUS)')
    assert "STATUS item" in bad(b'a LIST "" % RETURN (STATUS (FOO))')


def test_status() -> None:
    got = parse(b"a STATUS INBOX (messages uidnext UIDVALIDITY unseen SIZE HIGHESTMODSEQ DELETED RECENT)")
    assert got == Status(
        "a", "INBOX", ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "DELETED", "RECENT")
    )
    assert "STATUS item" in bad(b"a STATUS INBOX (BOGUS)")
    assert "empty" in bad(b"a STATUS INBOX ()")


def test_append_single_with_flags_and_date() -> None:
    msg = b"Subject: hi\r\n\r\nbody\r\n"
    data = b'a APPEND Drafts (\\Draft \\seen $Label) "17-Jul-1996 02:44:25 -0700" {%d+}\r\n' % len(msg) + msg + b"\r\n"
    got = parse(data)
    when = dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(-dt.timedelta(hours=7)))
    assert got == Append("a", "Drafts", (AppendMessage(("\\Draft", "\\Seen", "$Label"), when, msg),))


def test_append_plain_binary_utf8_and_multiappend() -> None:
    data = (
        b"a APPEND INBOX {3+}\r\nabc"
        b' () " 1-Jan-2020 00:00:00 +0000" ~{2+}\r\n\x00\x01'
        b" UTF8 (~{2+}\r\nhi)\r\n"
    )
    got = parse(data)
    assert isinstance(got, Append)
    assert [m.data for m in got.messages] == [b"abc", b"\x00\x01", b"hi"]
    assert [(m.binary, m.utf8) for m in got.messages] == [(False, False), (True, False), (True, True)]
    assert got.messages[1].internaldate == dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    assert "hi" not in repr(got.messages[2]) or "data" not in repr(got.messages[2])


def test_append_errors() -> None:
    assert "missing" in bad(b"a APPEND INBOX")
    assert "date-time" in bad(b'a APPEND INBOX "x"')
    assert "cannot be set" in bad(b"a APPEND INBOX (\\Recent) {1+}\r\nx")
    assert "date-time" in bad(b'a APPEND INBOX "31-Feb-2020 00:00:00 +0000" {1+}\r\nx')
    assert "date-time" in bad(b'a APPEND INBOX "1-Jan-2020 00:00:00 +0000" {1+}\r\nx')  # day must be 2 wide
    assert "literal8" in bad(b'a ID (~{1+}\r\nx "v")')


def test_store_forms() -> None:
    s = parse_seqset
    assert parse(b"a STORE 1:* +FLAGS (\\Deleted)") == Store("a", False, s("1:*"), "add", False, ("\\Deleted",))
    assert parse(b"a UID STORE 5 -flags.silent \\Seen $Junk") == Store(
        "a", True, s("5"), "remove", True, ("\\Seen", "$Junk")
    )
    assert parse(b"a STORE $ FLAGS ()") == Store("a", False, SeqSet(saved=True), "set", False, ())
    assert parse(b"a STORE 1 (UNCHANGEDSINCE 12345) FLAGS.SILENT (\\Flagged)") == Store(
        "a", False, s("1"), "set", True, ("\\Flagged",), 12345
    )
    assert "FLAGS" in bad(b"a STORE 1 +LABELS (x)")
    assert "modifier" in bad(b"a STORE 1 (FOO 1) FLAGS (x)")
    assert "cannot be set" in bad(b"a STORE 1 FLAGS (\\Recent)")
    assert "flag" in bad(b"a STORE 1 FLAGS (\\*)")
    assert "sequence set" in bad(b"a STORE 0 FLAGS (x)")


def test_copy_move() -> None:
    assert parse(b"a COPY 2:4 Archive") == Copy("a", False, parse_seqset("2:4"), "Archive")
    assert parse(b'a UID MOVE 4827313:4828442 "Saved"') == Move("a", True, parse_seqset("4827313:4828442"), "Saved")
    assert parse(b"a uid copy * inbox") == Copy("a", True, SeqSet(((STAR, STAR),)), "INBOX")
    assert "missing" in bad(b"a COPY 1")


def test_parse_error_carries_tag() -> None:
    with pytest.raises(ParseError) as e:
        parse(b"tag7 SELECT")
    assert e.value.tag == "tag7"


def test_malformed_framing_rejected() -> None:
    with pytest.raises(ParseError):
        parse_command(Command("a", "NOOP", (b"a NOOP", b"x")))
    with pytest.raises(ParseError):
        parse_command(Command("b", "NOOP", (b"a NOOP",)))


def test_nested_parens_depth_limit() -> None:
    ok = parse(b"a STATUS INBOX (MESSAGES)")
    assert isinstance(ok, Status)
    deep = b"(" * 100 + b"x" + b")" * 100
    with pytest.raises(ParseError, match="deep"):
        tokenize((b"a ID " + deep,), "a")


def test_generic_tokenizer() -> None:
    cmd = frame(b'a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From "To")]<0.10>) NIL "q\\"s" {3+}\r\nl\ni\r\n')
    toks = tokenize(cmd.fragments, cmd.tag)
    assert toks == [
        Atom("a"),
        Atom("FETCH"),
        Atom("1:*"),
        ParenList((Atom("FLAGS"), Atom('BODY.PEEK[HEADER.FIELDS (From "To")]<0.10>'))),
        Nil(),
        QuotedString(b'q"s'),
        LiteralString(b"l\ni"),
    ]
    assert tokenize((b"a X ~{1}", b"\x00", b" \\Seen NILS"))[2:] == [
        LiteralString(b"\x00", True),
        Atom("\\Seen"),
        Atom("NILS"),
    ]
    with pytest.raises(ParseError, match="unterminated"):
        tokenize((b"a X BODY[HEADER",))


_WORDS = st.sampled_from(
    [b"a ", b"UID ", b"FETCH ", b"SEARCH ", b"STORE ", b"APPEND ", b"LIST ", b"SELECT ", b"LOGIN ", b"ID ",
     b"(", b")", b"[", b"]", b"<", b">", b".", b'"', b"\\", b"{3+}\r\nabc", b"~{1+}\r\n\x00", b"1:*", b"$",
     b"NOT ", b"OR ", b"HEADER.FIELDS ", b"BODY", b"NIL", b"\x00", b"\xc3\xa9", b" ", b"*", b"0", b"12"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=30))
def test_parser_raises_only_parse_error(words: list[bytes]) -> None:
    data = b"t " + b"".join(words) + b"\r\n"
    c = ImapServerConnection(max_line=4096, max_literal=4096)
    c.receive_data(data)
    while (ev := c.next_event()) is not None:
        if isinstance(ev, Command):
            try:
                parse_command(ev)
            except ParseError:
                pass  # expected for most random input; anything else fails the test
