"""SEARCH key trees and FETCH items."""

from __future__ import annotations

import datetime as dt

import pytest

from pigeon.proto.imap.commands import (
    Fetch,
    FetchAtt,
    Search,
    SearchAll,
    SearchAnd,
    SearchDate,
    SearchFlag,
    SearchHeader,
    SearchModseq,
    SearchNot,
    SearchOr,
    SearchSet,
    SearchSize,
    SearchText,
    Section,
)
from pigeon.proto.imap.errors import CharsetError, ParseError
from pigeon.proto.imap.seqset import SeqSet, parse_seqset
from tests.unit.proto.imap.imap_harness import parse


def search(line: bytes) -> Search:
    got = parse(line)
    assert isinstance(got, Search)
    return got


def keys(line: bytes) -> tuple[object, ...]:
    return search(line).criteria.keys


def bad(line: bytes) -> str:
    with pytest.raises(ParseError) as e:
        parse(line)
    return e.value.reason


def test_every_simple_key() -> None:
    got = keys(
        b"a SEARCH ALL ANSWERED DELETED DRAFT FLAGGED NEW OLD RECENT SEEN UNANSWERED UNDELETED"
        b" UNDRAFT UNFLAGGED UNSEEN KEYWORD $Junk UNKEYWORD foo"
    )
    assert got == (
        SearchAll(),
        SearchFlag("\\Answered"),
        SearchFlag("\\Deleted"),
        SearchFlag("\\Draft"),
        SearchFlag("\\Flagged"),
        SearchAnd((SearchFlag("\\Recent"), SearchFlag("\\Seen", False))),
        SearchFlag("\\Recent", False),
        SearchFlag("\\Recent"),
        SearchFlag("\\Seen"),
        SearchFlag("\\Answered", False),
        SearchFlag("\\Deleted", False),
        SearchFlag("\\Draft", False),
        SearchFlag("\\Flagged", False),
        SearchFlag("\\Seen", False),
        SearchFlag("$Junk"),
        SearchFlag("foo", False),
    )


def test_string_keys() -> None:
    got = keys(
        b'a SEARCH BCC b CC "c d" FROM {4+}\r\nf\r\no SUBJECT s TO t HEADER List-Id "" BODY x TEXT "y z"'
    )
    assert got == (
        SearchHeader("BCC", "b"),
        SearchHeader("CC", "c d"),
        SearchHeader("FROM", "f\r\no"),
        SearchHeader("SUBJECT", "s"),
        SearchHeader("TO", "t"),
        SearchHeader("LIST-ID", ""),
        SearchText("BODY", "x"),
        SearchText("TEXT", "y z"),
    )


def test_date_size_and_set_keys() -> None:
    got = keys(
        b'a SEARCH BEFORE 1-Feb-1994 ON "02-feb-1994" SINCE 3-FEB-1994 SENTBEFORE 4-Mar-2000'
        b" SENTON 5-Mar-2000 SENTSINCE 6-Mar-2000 LARGER 100 SMALLER 5000000000 1:3,* UID 7:9 $"
    )
    d = dt.date
    assert got == (
        SearchDate(False, "BEFORE", d(1994, 2, 1)),
        SearchDate(False, "ON", d(1994, 2, 2)),
        SearchDate(False, "SINCE", d(1994, 2, 3)),
        SearchDate(True, "BEFORE", d(2000, 3, 4)),
        SearchDate(True, "ON", d(2000, 3, 5)),
        SearchDate(True, "SINCE", d(2000, 3, 6)),
        SearchSize("LARGER", 100),
        SearchSize("SMALLER", 5000000000),
        SearchSet(parse_seqset("1:3,*")),
        SearchSet(parse_seqset("7:9"), uid=True),
        SearchSet(SeqSet(saved=True)),
    )


def test_not_or_groups() -> None:
    got = keys(b"a UID SEARCH OR (SEEN FLAGGED) NOT FROM x NOT (OR 1 2 DELETED)")
    assert got == (
        SearchOr(SearchAnd((SearchFlag("\\Seen"), SearchFlag("\\Flagged"))), SearchNot(SearchHeader("FROM", "x"))),
        SearchNot(SearchAnd((SearchOr(SearchSet(parse_seqset("1")), SearchSet(parse_seqset("2"))), SearchFlag("\\Deleted")))),
    )
    assert search(b"a UID SEARCH ALL").uid


def test_modseq_key() -> None:
    assert keys(b"a SEARCH MODSEQ 620162338") == (SearchModseq(620162338),)
    assert keys(b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338') == (
        SearchModseq(620162338, "/flags/\\draft", "all"),
    )
    assert keys(b"a SEARCH MODSEQ 0") == (SearchModseq(0),)
    assert "entry type" in bad(b'a SEARCH MODSEQ "/flags/x" both 5')


def test_charset_and_return() -> None:
    s = search(b'a SEARCH RETURN (MIN COUNT) CHARSET utf-8 SUBJECT "\xc3\xa9t\xc3\xa9"')
    assert s.charset == "UTF-8" and s.return_opts == ("MIN", "COUNT")
    assert s.criteria.keys == (SearchHeader("SUBJECT", "été"),)
    assert search(b"a SEARCH RETURN () ALL").return_opts == ("ALL",)
    assert search(b"a SEARCH RETURN (SAVE) ALL").return_opts == ("SAVE",)
    assert search(b"a SEARCH ALL").return_opts is None
    with pytest.raises(CharsetError) as e:
        parse(b"a SEARCH CHARSET KOI8-R SUBJECT x")
    assert e.value.charset == "KOI8-R" and e.value.tag == "a"
    assert "return option" in bad(b"a SEARCH RETURN (PARTIAL) ALL")
    assert "UTF-8" in bad(b'a SEARCH SUBJECT "\xff"')


def test_search_syntax_errors() -> None:
    assert "unknown search key" in bad(b"a SEARCH FOO")
    assert "missing" in bad(b"a SEARCH")
    assert "empty" in bad(b"a SEARCH ()")
    assert "date" in bad(b"a SEARCH SINCE 1994-02-01")
    assert "date" in bad(b"a SEARCH SINCE 30-Feb-1994")
    assert "sequence set" in bad(b"a SEARCH 1:0")
    assert bad(b"a SEARCH (SEEN")
    assert bad(b"a SEARCH OR SEEN")


def test_search_depth_limit_not_recursion_error() -> None:
    assert "deep" in bad(b"a SEARCH " + b"NOT " * 5000 + b"ALL")
    assert "deep" in bad(b"a SEARCH " + b"(" * 5000 + b"ALL" + b")" * 5000)
    assert "deep" in bad(b"a SEARCH " + b"OR ALL " * 3000 + b"ALL")
    ok = keys(b"a SEARCH " + b"NOT " * 50 + b"ALL")
    assert len(ok) == 1


def fetch(line: bytes) -> Fetch:
    got = parse(line)
    assert isinstance(got, Fetch)
    return got


def test_fetch_macros() -> None:
    assert [i.name for i in fetch(b"a FETCH 1 FAST").items] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    assert [i.name for i in fetch(b"a FETCH 1 all").items] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    assert [i.name for i in fetch(b"a FETCH 1 FULL").items][-1] == "BODY"
    assert "unknown FETCH item" in bad(b"a FETCH 1 (ALL)")


def test_fetch_simple_items() -> None:
    got = fetch(
        b"a UID FETCH 1:* (FLAGS INTERNALDATE RFC822 RFC822.SIZE RFC822.HEADER RFC822.TEXT ENVELOPE"
        b" BODY BODYSTRUCTURE UID MODSEQ)"
    )
    assert got.uid and got.sequence == parse_seqset("1:*")
    assert [i.name for i in got.items] == [
        "FLAGS", "INTERNALDATE", "RFC822", "RFC822.SIZE", "RFC822.HEADER", "RFC822.TEXT",
        "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ",
    ]  # fmt: skip
    assert all(i.section is None for i in got.items)


def test_fetch_sections() -> None:
    got = fetch(
        b"a FETCH 2 (BODY[] BODY.PEEK[HEADER] BODY[1.2.TEXT]<0.2048> body.peek[header.fields (From To \"Subject\")]"
        b" BODY[3.HEADER.FIELDS.NOT (Received)] BODY[1.MIME] BODY[TEXT] BODY[4.1] BINARY[1] BINARY.PEEK[1.2]<10.5>"
        b" BINARY.SIZE[2] BINARY[])"
    )
    assert got.items == (
        FetchAtt("BODY", Section()),
        FetchAtt("BODY", Section((), "HEADER"), peek=True),
        FetchAtt("BODY", Section((1, 2), "TEXT"), (0, 2048)),
        FetchAtt("BODY", Section((), "HEADER.FIELDS", ("From", "To", "Subject")), peek=True),
        FetchAtt("BODY", Section((3,), "HEADER.FIELDS.NOT", ("Received",))),
        FetchAtt("BODY", Section((1,), "MIME")),
        FetchAtt("BODY", Section((), "TEXT")),
        FetchAtt("BODY", Section((4, 1))),
        FetchAtt("BINARY", Section((1,))),
        FetchAtt("BINARY", Section((1, 2)), (10, 5), peek=True),
        FetchAtt("BINARY.SIZE", Section((2,))),
        FetchAtt("BINARY", Section()),
    )
    assert [i.sets_seen for i in got.items] == [True, False, True, False, True, True, True, True, True, False, False, True]
    assert fetch(b"a FETCH 1 BODY[]<5.10>").items == (FetchAtt("BODY", Section(), (5, 10)),)


def test_fetch_modifiers() -> None:
    got = fetch(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert got.changedsince == 12345 and got.vanished
    assert fetch(b"a FETCH 1:* FLAGS (CHANGEDSINCE 7)").changedsince == 7
    assert "VANISHED" in bad(b"a FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert "VANISHED" in bad(b"a UID FETCH 1:* (FLAGS) (VANISHED)")
    assert "modifier" in bad(b"a FETCH 1 FLAGS (FOO)")
    assert "0" in bad(b"a FETCH 1 FLAGS (CHANGEDSINCE 0)")


def test_fetch_errors() -> None:
    assert "MIME" in bad(b"a FETCH 1 BODY[MIME]") or "section" in bad(b"a FETCH 1 BODY[MIME]")
    assert "section" in bad(b"a FETCH 1 BODY[1.FOO]")
    assert "takes no section" in bad(b"a FETCH 1 FLAGS[1]")
    assert "unknown FETCH item" in bad(b"a FETCH 1 BODY.PEEK")
    assert "unknown FETCH item" in bad(b"a FETCH 1 BINARY")
    assert "partial length" in bad(b"a FETCH 1 BODY[]<0.0>")
    assert bad(b"a FETCH 1 BINARY[HEADER]")
    assert "header field name" in bad(b'a FETCH 1 BODY[HEADER.FIELDS ("a:b")]')
    assert "empty" in bad(b"a FETCH 1 BODY[HEADER.FIELDS ()]")
    assert "empty" in bad(b"a FETCH 1 ()")
    assert "0" in bad(b"a FETCH 1 BODY[0]")
    assert bad(b"a FETCH 1 BODY[1")
    assert bad(b"a FETCH 1:2:3 FLAGS")
