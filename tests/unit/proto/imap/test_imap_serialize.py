"""Response writers: exact octets."""

from __future__ import annotations

import datetime as dt

from pigeon.proto.imap import serialize as s
from pigeon.proto.imap.commands import FetchAtt, Fetch
from tests.unit.proto.imap.imap_harness import parse


def test_astring_choice() -> None:
    assert s.astring("INBOX") == b"INBOX"
    assert s.astring("[Gmail]/Sent") == b"[Gmail]/Sent"
    assert s.astring("") == b'""'
    assert s.astring("NIL") == b'"NIL"'
    assert s.astring("nil") == b'"nil"'
    assert s.astring("a b") == b'"a b"'
    assert s.astring('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert s.astring("a%") == b'"a%"'
    assert s.astring("x\r\ny") == b"{4}\r\nx\r\ny"
    assert s.astring("été") == b"{5}\r\n\xc3\xa9t\xc3\xa9"
    assert s.astring("été", utf8=True) == b'"\xc3\xa9t\xc3\xa9"'
    assert s.astring(b"\x00") == b"{1}\r\n\x00"
    assert s.astring(b"\xff", utf8=True) == b"{1}\r\n\xff"  # not UTF-8
    long = "x " * 600
    assert s.astring(long).startswith(b"{1200}\r\n")


def test_string_nstring_literal() -> None:
    assert s.string("abc") == b'"abc"'
    assert s.nstring(None) == b"NIL"
    assert s.nstring("") == b'""'
    assert s.literal(b"abc") == b"{3}\r\nabc"
    assert s.literal(b"\x00", binary=True) == b"~{1}\r\n\x00"
    assert s.quoted("a") == b'"a"'


def test_mailbox_names() -> None:
    assert s.mailbox("Entwürfe") == b"Entw&APw-rfe"
    assert s.mailbox("Entwürfe", utf8=True) == b'"Entw\xc3\xbcrfe"'
    assert s.mailbox("Tom & Jerry") == b'"Tom &- Jerry"'
    assert s.mailbox("INBOX") == b"INBOX"


def test_lists_and_flags() -> None:
    assert s.plist([]) == b"()"
    assert s.flag_list(["\\Seen", "$Junk"]) == b"(\\Seen $Junk)"
    assert s.plist([b"MESSAGES", b"3", s.nstring(None)]) == b"(MESSAGES 3 NIL)"


def test_status_lines() -> None:
    assert s.tagged("a1", "OK", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert s.tagged("a2", "NO", "too big", code="TOOBIG") == b"a2 NO [TOOBIG] too big\r\n"
    assert s.tagged("a3", "OK", "", code="READ-WRITE") == b"a3 OK [READ-WRITE] OK\r\n"
    assert s.tagged("a4", "BAD", "evil\r\na5 OK injected") == b"a4 BAD evil  a5 OK injected\r\n"
    assert s.untagged("3 EXISTS") == b"* 3 EXISTS\r\n"
    assert s.untagged(b"1 FETCH (BODY[] {2}\r\nhi)") == b"* 1 FETCH (BODY[] {2}\r\nhi)\r\n"
    assert s.untagged_status("OK", "Pigeon ready", code="CAPABILITY IMAP4rev1") == (
        b"* OK [CAPABILITY IMAP4rev1] Pigeon ready\r\n"
    )
    assert s.untagged_status("BYE", "Autologout") == b"* BYE Autologout\r\n"
    assert s.continuation() == b"+ \r\n"
    assert s.continuation("Ready") == b"+ Ready\r\n"


def test_internaldate() -> None:
    when = dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(-dt.timedelta(hours=7)))
    assert s.internaldate(when) == b'"17-Jul-1996 02:44:25 -0700"'
    assert s.internaldate(when.timestamp(), -420) == b'"17-Jul-1996 02:44:25 -0700"'


def test_fetch_labels_round_trip_request_names() -> None:
    got = parse(
        b'a FETCH 1 (BODY.PEEK[HEADER.FIELDS (From "X-Y")]<0.100> BODY[1.2.MIME] BINARY.PEEK[2]<5.5>'
        b" BINARY.SIZE[1] RFC822.SIZE BODY[])"
    )
    assert isinstance(got, Fetch)
    assert [s.fetch_label(i) for i in got.items] == [
        b'BODY[HEADER.FIELDS (From X-Y)]<0>',
        b"BODY[1.2.MIME]",
        b"BINARY[2]<5>",
        b"BINARY.SIZE[1]",
        b"RFC822.SIZE",
        b"BODY[]",
    ]
    assert s.fetch_label(FetchAtt("UID")) == b"UID"
