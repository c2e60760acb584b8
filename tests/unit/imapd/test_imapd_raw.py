"""Byte-exact IMAP dialogues on a raw socket: literals, LITERAL+, IDLE, untagged updates between
sessions, QRESYNC VANISHED, limits (oversize literal, bad-command flood) and LOGINDISABLED."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.core.address import parse_address
from pigeon.store.mailbox import MailStore
from tests.unit.imapd.helpers import ALICE, PASSWORD, RawClient, ServerThread, deliver, message


@pytest.fixture
def server(store: MailStore, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(store, tmp_path, max_errors=5) as srv:
        yield srv


def test_greeting_and_synchronising_literal_login(server: ServerThread) -> None:
    with RawClient(server.port) as c:
        assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ ")
        assert c.greeting.endswith(b"AUTH=PLAIN AUTH=LOGIN] Pigeon IMAP ready\r\n")
        c.send(b"a1 LOGIN {%d}\r\n" % len(ALICE))
        assert c.line() == b"+ Ready for literal data\r\n"
        c.send(ALICE.encode() + b' "' + PASSWORD.encode() + b'"\r\n')
        resp = c.until(b"a1")
        assert resp[-1].startswith(b"a1 OK [CAPABILITY IMAP4rev1 ")
        assert b"AUTH=" not in resp[-1]
        assert c.cmd(b"a2", b"LOGOUT") == [b"* BYE Logging out\r\n", b"a2 OK LOGOUT completed\r\n"]


def test_literal_plus_append_and_fetch_literal(server: ServerThread) -> None:
    data = b"Subject: hi\r\n\r\nbody\r\n"
    with RawClient(server.port) as c:
        c.login()
        c.send(b"a1 APPEND INBOX (\\Flagged) {%d+}\r\n" % len(data) + data + b"\r\n")
        resp = c.until(b"a1")
        assert resp[-1].startswith(b"a1 OK [APPENDUID ") and resp[-1].split()[4] == b"1]"
        c.cmd(b"a2", b"SELECT INBOX")
        resp = c.cmd(b"a3", b"FETCH 1 (BODY.PEEK[TEXT] BODY[HEADER.FIELDS (subject)]<0.7>)")
        assert resp[0] == (b"* 1 FETCH (BODY[TEXT] {6}\r\nbody\r\n BODY[HEADER.FIELDS (subject)]<0> {7}\r\n"
                           b"Subject FLAGS (\\Flagged \\Seen \\Recent))\r\n")
        resp = c.cmd(b"a4", b"FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] RFC822.HEADER)")
        assert resp[0] == b"* 1 FETCH (BINARY.SIZE[1] 6 BINARY[1] {6}\r\nbody\r\n RFC822.HEADER {15}\r\nSubject: hi\r\n\r\n)\r\n"


def test_idle_reports_a_delivery_within_a_second(server: ServerThread, store: MailStore) -> None:
    deliver(store, message(1))
    with RawClient(server.port) as c:
        c.login()
        c.cmd(b"s", b"SELECT INBOX")
        c.send(b"i IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
        start = time.monotonic()
        deliver(store, message(2))
        assert c.line() == b"* 2 EXISTS\r\n"
        assert c.line() == b"* 2 RECENT\r\n"  # both arrived before any other session saw them
        assert time.monotonic() - start < 1.0
        c.send(b"DONE\r\n")
        assert c.line() == b"i OK IDLE terminated\r\n"


def test_store_reports_the_flags_after_it_when_another_session_set_them(
        server: ServerThread, store: MailStore) -> None:
    """imapd.store rule 5: session b's view is older than a's STORE; b's STORE of the same
    flags writes nothing, yet its FETCH shows them (RFC 3501 §6.4.6), once, not the old ones;
    a .SILENT STORE still tells b of a's change (RFC 3501 §7.4.1)."""
    for n in range(1, 3):
        deliver(store, message(n))
    with RawClient(server.port) as a, RawClient(server.port) as b:
        a.login()
        b.login()
        a.cmd(b"s", b"SELECT INBOX")
        b.cmd(b"s", b"SELECT INBOX")
        a.cmd(b"a1", b"STORE 1:2 FLAGS.SILENT (\\Answered \\Seen)")
        assert b.cmd(b"b1", b"UID STORE 1 FLAGS (\\Answered \\Seen)") == [
            b"* 1 FETCH (UID 1 FLAGS (\\Answered \\Seen))\r\n",
            b"* 2 FETCH (FLAGS (\\Answered \\Seen))\r\n",  # the sync after it: a's change to 2
            b"b1 OK STORE completed\r\n"]
        a.cmd(b"a2", b"STORE 1 +FLAGS.SILENT (\\Flagged)")
        assert b.cmd(b"b2", b"STORE 1 +FLAGS.SILENT (\\Seen)") == [
            b"* 1 FETCH (FLAGS (\\Answered \\Flagged \\Seen))\r\n", b"b2 OK STORE completed\r\n"]
        assert b.cmd(b"b3", b"NOOP") == [b"b3 OK NOOP completed\r\n"]


def test_no_expunge_during_fetch_but_after_noop(server: ServerThread, store: MailStore) -> None:
    for n in range(1, 4):
        deliver(store, message(n))
    with RawClient(server.port) as a, RawClient(server.port) as b:
        a.login()
        b.login()
        a.cmd(b"s", b"SELECT INBOX")
        b.cmd(b"s", b"SELECT INBOX")
        a.cmd(b"d", b"STORE 2 +FLAGS.SILENT (\\Deleted)")
        assert a.cmd(b"e", b"EXPUNGE") == [b"* 2 EXPUNGE\r\n", b"e OK EXPUNGE completed\r\n"]
        # RFC 3501 §7.4.1: no EXPUNGE during FETCH; message 2 is gone, message 3 keeps its number
        resp = b.cmd(b"f0", b"FETCH 1:3 (UID)")  # b has not looked yet: the sync after it keeps the expunge
        assert resp == [b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 2)\r\n", b"* 3 FETCH (UID 3)\r\n",
                        b"f0 OK FETCH completed\r\n"]
        resp = b.cmd(b"f", b"FETCH 1:3 (UID)")
        assert resp == [b"* 1 FETCH (UID 1)\r\n", b"* 3 FETCH (UID 3)\r\n",
                        b"f OK [EXPUNGEISSUED] Some messages were expunged meanwhile\r\n"]
        assert b.cmd(b"n", b"NOOP") == [b"* 2 EXPUNGE\r\n", b"n OK NOOP completed\r\n"]
        # a flag change by a shows up in b as FETCH FLAGS after NOOP
        a.cmd(b"g", b"STORE 1 +FLAGS.SILENT (\\Flagged)")
        assert b.cmd(b"n2", b"NOOP") == [b"* 1 FETCH (FLAGS (\\Flagged))\r\n", b"n2 OK NOOP completed\r\n"]
        # UID FETCH may carry the expunge
        a.cmd(b"h", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
        a.cmd(b"x", b"EXPUNGE")
        assert b.cmd(b"u", b"UID FETCH 3 (UID)") == [b"* 2 FETCH (UID 3)\r\n", b"* 1 EXPUNGE\r\n",
                                                      b"u OK FETCH completed\r\n"]


def test_qresync_vanished(server: ServerThread, store: MailStore) -> None:
    for n in range(1, 5):
        deliver(store, message(n))
    with RawClient(server.port) as a, RawClient(server.port) as b:
        a.login()
        b.login()
        assert b.cmd(b"en", b"ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC\r\n"
        resp = b.cmd(b"s", b"SELECT INBOX")
        validity = next(ln for ln in resp if b"UIDVALIDITY" in ln).split()[3].rstrip(b"]")
        modseq = next(ln for ln in resp if b"HIGHESTMODSEQ" in ln).split()[3].rstrip(b"]")
        b.cmd(b"l", b"LOGOUT")
        a.cmd(b"s", b"SELECT INBOX")
        a.cmd(b"d", b"STORE 2:3 +FLAGS.SILENT (\\Deleted)")
        a.cmd(b"e", b"EXPUNGE")
        a.cmd(b"f", b"UID STORE 4 +FLAGS.SILENT (\\Answered)")
        with RawClient(server.port) as c:
            c.login()
            c.cmd(b"en", b"ENABLE QRESYNC")
            resp = c.cmd(b"s", b"SELECT INBOX (QRESYNC (" + validity + b" " + modseq + b" 1:4))")
            assert b"* VANISHED (EARLIER) 2:3\r\n" in resp
            assert any(ln.startswith(b"* 2 FETCH (UID 4 FLAGS (\\Answered") and b"MODSEQ (" in ln for ln in resp), b"".join(resp).decode()
            a.cmd(b"g", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
            a.cmd(b"x", b"EXPUNGE")
            assert c.cmd(b"n", b"NOOP")[0] == b"* VANISHED 1\r\n"
            resp = c.cmd(b"v", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
            assert resp[0] == b"* VANISHED (EARLIER) 1:3\r\n"


def test_oversize_literal_refused_before_it_is_read(server: ServerThread) -> None:
    with RawClient(server.port) as c:
        c.login()
        c.send(b"a1 APPEND INBOX {5000000}\r\n")
        assert c.line() == b"a1 NO [TOOBIG] Literal of 5000000 octets is too big\r\n"
        assert c.cmd(b"a2", b"NOOP") == [b"a2 OK NOOP completed\r\n"]


def test_bad_command_flood_ends_with_bye(server: ServerThread) -> None:
    with RawClient(server.port) as c:
        for i in range(4):
            assert c.cmd(b"b%d" % i, b"FROB")[-1].startswith(b"b%d BAD " % i)
        c.send(b"b9 FETCH 1 (FLAGS)\r\n")  # not allowed before login: the fifth bad command
        assert c.line().startswith(b"b9 BAD ")
        assert c.line() == b"* BYE Too many invalid commands\r\n"
        assert c.file.readline() == b""


def test_login_disabled_on_clear_channel(store: MailStore, tmp_path: Path) -> None:
    with ServerThread(store, tmp_path, allow_plaintext_on_loopback=False) as srv, RawClient(srv.port) as c:
        assert b"LOGINDISABLED" in c.greeting and b"AUTH=PLAIN" not in c.greeting
        assert c.cmd(b"a", f'LOGIN {ALICE} "{PASSWORD}"'.encode()) == [
            b"a NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS\r\n"]
        assert c.cmd(b"b", b"AUTHENTICATE PLAIN")[-1].startswith(b"b NO [PRIVACYREQUIRED]")


def test_authenticate_plain_with_continuation_and_sasl_ir(server: ServerThread) -> None:
    import base64
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    with RawClient(server.port) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        c.send(token + b"\r\n")
        assert c.until(b"a")[-1].startswith(b"a OK [CAPABILITY")
    with RawClient(server.port) as c:
        assert c.cmd(b"a", b"AUTHENTICATE PLAIN " + token)[-1].startswith(b"a OK")
    with RawClient(server.port) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        c.line()
        c.send(b"*\r\n")
        assert c.until(b"a")[-1].startswith(b"a BAD ")


def test_search_esearch_save_and_dollar(server: ServerThread, store: MailStore) -> None:
    for n in range(1, 6):
        deliver(store, message(n, subject="apple" if n % 2 else "pear"))
    with RawClient(server.port) as c:
        c.login()
        c.cmd(b"s", b"SELECT INBOX")
        assert c.cmd(b"a", b"SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT apple")[0] == \
            b'* ESEARCH (TAG "a") MIN 1 MAX 5 ALL 1,3,5 COUNT 3\r\n'
        assert c.cmd(b"b", b"UID SEARCH RETURN (SAVE) SUBJECT pear") == [b"b OK SEARCH completed, result saved\r\n"]
        assert c.cmd(b"c", b"FETCH $ (UID)")[:2] == [b"* 2 FETCH (UID 2)\r\n", b"* 4 FETCH (UID 4)\r\n"]
        assert c.cmd(b"d", b"SEARCH CHARSET KOI8-R ALL") == [
            b"d NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset 'KOI8-R'\r\n"]
        assert c.cmd(b"e", b"SEARCH CHARSET UTF-8 LARGER 1 SMALLER 100000 NOT DELETED 2:*")[0] == b"* SEARCH 2 3 4 5\r\n"
        assert c.cmd(b"f", b"SEARCH MODSEQ 1 UID 5")[0].startswith(b"* SEARCH 5 (MODSEQ ")
        assert c.cmd(b"g", b"FETCH 9 (FLAGS)")[-1].startswith(b"g BAD ")


def test_mailbox_names_utf7_and_utf8(server: ServerThread) -> None:
    with RawClient(server.port) as c:
        c.login()
        assert c.cmd(b"a", b"CREATE Entw&APw-rfe")[-1] == b"a OK CREATE completed\r\n"
        assert c.cmd(b"b", b'LIST "" "Entw*"')[0] == b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe\r\n'
        assert c.cmd(b"c", b"CREATE &Jjo-!")[-1].startswith(b"c OK")
        assert c.cmd(b"d", b"CREATE foo/../bar")[-1].startswith(b"d NO ")
        # not canonical mUTF-7: a well-formed command naming no possible mailbox (issue 18)
        assert c.cmd(b"e", b"CREATE Entw&AFw-")[-1].startswith(b"e NO [CANNOT] ")
        assert c.cmd(b"e2", b"SELECT Entw&AFw-")[-1].startswith(b"e2 NO [NONEXISTENT] ")
        assert c.cmd(b"e3", b'LIST "" Entw&AFw-')[-1] == b"e3 OK LIST completed\r\n"
        c.cmd(b"f", b"ENABLE UTF8=ACCEPT")
        assert c.cmd(b"g", b'LIST "" "Entw*"')[0] == '* LIST (\\HasNoChildren) "/" "Entwürfe"\r\n'.encode()
        resp = c.cmd(b"h", b'LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED STATUS (MESSAGES))')
        assert b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent\r\n' in resp
        assert b"* STATUS Sent (MESSAGES 0)\r\n" in resp
        assert not any(b"INBOX" in ln for ln in resp)
        assert c.cmd(b"i", b'LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""\r\n'
        assert c.cmd(b"j", b"NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'


def test_header_search_answers_from_the_index_cache(server: ServerThread, store: MailStore) -> None:
    """imapd.search rule 6: the second header search reads no message file (the test rewrites
    the files behind the store's back, which Maildir never does, to see which one answers)."""
    for n in range(1, 4):
        deliver(store, message(n, subject="apple pie" if n != 2 else "pear"))
    with RawClient(server.port) as c:
        c.login()
        c.cmd(b"s", b"SELECT INBOX")
        assert c.cmd(b"a", b'SEARCH SUBJECT "APPLE"')[0] == b"* SEARCH 1 3\r\n"
        assert c.cmd(b"b", b'SEARCH OR FROM "nobody" SUBJECT pear')[0] == b"* SEARCH 2\r\n"
        view = store.account(parse_address(ALICE)).select("INBOX", readonly=True)
        cur = view.directory / "cur"
        view.close()
        for f in cur.iterdir():
            f.write_bytes(f.read_bytes().replace(b"Subject: apple pie", b"Subject: plum tart"))
        assert c.cmd(b"c", b'SEARCH SUBJECT "apple"')[0] == b"* SEARCH 1 3\r\n"  # the cache answered
        assert c.cmd(b"d", b'SEARCH SUBJECT "plum"')[0] == b"* SEARCH\r\n"
        assert c.cmd(b"e", b"SEARCH HEADER Message-ID m2@")[0] == b"* SEARCH 2\r\n"  # a field not cached yet: read
