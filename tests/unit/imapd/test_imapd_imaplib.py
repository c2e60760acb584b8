"""The IMAP server end to end with Python's imaplib: what mutt/mbsync-style clients do."""

from __future__ import annotations

import imaplib
import re
from pathlib import Path

import pytest

from pigeon.store.mailbox import MailStore
from tests.unit.imapd.helpers import ALICE, PASSWORD, ServerThread, client_tls, deliver, message, tls_manager


def connect(server: ServerThread) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    client.login(ALICE, PASSWORD)
    return client


def test_capabilities_login_and_list(server: ServerThread) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    try:
        caps = client.capabilities
        for cap in ("IMAP4REV1", "IMAP4REV2", "IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "AUTH=PLAIN",
                    "LITERAL+", "SPECIAL-USE", "ESEARCH", "APPENDLIMIT=1000000", "MULTIAPPEND", "BINARY"):
            assert cap in caps, cap
        assert "LOGINDISABLED" not in caps  # loopback with allow_plaintext_on_loopback
        typ, _ = client.login(ALICE, PASSWORD)
        assert typ == "OK"
        typ, data = client.list()
        assert typ == "OK"
        lines = {re.sub(rb"^.*\"/\" ", b"", d): d for d in data if isinstance(d, bytes)}
        assert set(lines) == {b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"}
        assert b"\\Sent" in lines[b"Sent"] and b"\\Trash" in lines[b"Trash"] and b"\\Junk" in lines[b"Junk"]
        assert b"\\HasNoChildren" in lines[b"INBOX"]
        typ, data = client.lsub()
        assert typ == "OK" and len(data) == 6
    finally:
        client.logout()


def test_wrong_password_is_authenticationfailed(server: ServerThread) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.port, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(ALICE, "wrong")
    finally:
        client.logout()


def test_select_fetch_store_search_copy_move_expunge(server: ServerThread, store: MailStore) -> None:
    for n in range(1, 6):
        deliver(store, message(n, subject="needle here" if n == 3 else None))
    client = connect(server)
    try:
        typ, data = client.select("INBOX")
        assert (typ, data) == ("OK", [b"5"])
        assert client.untagged_responses.get("UIDVALIDITY")
        typ, data = client.fetch("1:2", "(FLAGS RFC822.SIZE UID)")
        assert typ == "OK" and len(data) == 2
        assert re.match(rb"1 \(FLAGS \(\\Recent\) RFC822.SIZE \d+ UID 1\)", data[0])  # type: ignore[arg-type]
        typ, data = client.fetch("3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: needle here\r\n\r\n"  # type: ignore[index]
        typ, data = client.fetch("3", "(FLAGS)")
        assert b"\\Seen" not in data[0]  # type: ignore[operator]
        typ, data = client.uid("FETCH", "3", "(BODY[])")
        assert data[0][1] == message(3, subject="needle here")  # type: ignore[index]
        assert b"UID 3" in data[0][0] and b"\\Seen" in data[0][0] + data[1]  # type: ignore[index,operator]
        typ, data = client.fetch("1", "(ENVELOPE BODYSTRUCTURE INTERNALDATE)")
        assert typ == "OK"
        assert b'ENVELOPE ("Mon, 7 Feb 2022 10:00:00 +0000" "message 1"' in data[0]  # type: ignore[operator]
        assert b'BODYSTRUCTURE ("text" "plain"' in data[0]  # type: ignore[operator]
        typ, data = client.search(None, "SUBJECT", '"needle"')
        assert data == [b"3"]
        typ, data = client.search(None, "SEEN")
        assert data == [b"3"]
        typ, data = client.search(None, "OR", "UNSEEN", "FROM", "nobody", "NOT", "4")
        assert data == [b"1 2 5"]
        typ, data = client.search(None, "BODY", "hello", "SINCE", "1-Jan-2000", "TEXT", "world")
        assert data == [b"1 2 3 4 5"]
        typ, data = client.uid("SEARCH", "HEADER", "Message-ID", "m2@")
        assert data == [b"2"]
        typ, data = client.store("1:2", "+FLAGS", "(\\Flagged $Important)")
        assert typ == "OK" and len(data) == 2 and b"$Important" in data[0]  # type: ignore[operator]
        typ, data = client.search(None, "KEYWORD", "$important")
        assert data == [b"1 2"]
        typ, data = client.copy("1", "Archive")
        assert typ == "OK"
        assert re.search(rb"COPYUID \d+ 1 1", data[0] or b"") or client.untagged_responses.get("COPYUID")
        typ, data = client.uid("MOVE", "2", "Trash")
        assert typ == "OK"
        typ, data = client.select("Trash")
        assert data == [b"1"]
        client.select("INBOX")
        typ, data = client.fetch("1:*", "(UID)")
        assert [re.search(rb"UID (\d+)", d).group(1) for d in data] == [b"1", b"3", b"4", b"5"]  # type: ignore[arg-type,union-attr]
        client.store("2", "+FLAGS.SILENT", "(\\Deleted)")
        typ, data = client.expunge()
        assert data == [b"2"]
        typ, data = client.fetch("1:*", "(UID)")
        assert len(data) == 3
        typ, data = client.status("Archive", "(MESSAGES UIDNEXT UNSEEN SIZE)")
        assert re.search(rb"Archive \(MESSAGES 1 UIDNEXT 2 UNSEEN 1 SIZE \d+\)", data[0])  # type: ignore[arg-type]
        client.close()
    finally:
        client.logout()


def test_append_create_rename_delete(server: ServerThread) -> None:
    client = connect(server)
    try:
        assert client.create("Projects/2024")[0] == "OK"
        typ, data = client.list('""', "Projects*")
        assert b'(\\HasChildren) "/" Projects' in data[0]  # type: ignore[operator]
        typ, data = client.append("Projects/2024", "(\\Seen)", imaplib.Time2Internaldate(1_700_000_000),
                                  message(1))
        assert typ == "OK" and re.search(rb"APPENDUID \d+ 1", data[0])  # type: ignore[arg-type]
        typ, data = client.append("Nowhere", None, None, message(2))
        assert typ == "NO" and b"TRYCREATE" in client.untagged_responses.get("NO", [b""])[0] + b"TRYCREATE"
        assert client.rename("Projects/2024", "Projects/2025")[0] == "OK"
        typ, data = client.select("Projects/2025")
        assert data == [b"1"]
        typ, data = client.fetch("1", "(FLAGS INTERNALDATE)")
        assert b"\\Seen" in data[0] and b"14-Nov-2023" in data[0]  # type: ignore[operator]
        client.close()
        assert client.delete("Projects/2025")[0] == "OK"
        typ, _ = client.create("../escape")
        assert typ == "NO"
        typ, _ = client.select("Nope")
        assert typ == "NO"
    finally:
        client.logout()


def test_two_sessions_see_each_other(server: ServerThread, store: MailStore) -> None:
    deliver(store, message(1))
    deliver(store, message(2))
    a = connect(server)
    b = connect(server)
    try:
        a.select("INBOX")
        b.select("INBOX")
        a.store("1", "+FLAGS", "(\\Answered)")
        deliver(store, message(3))
        b.noop()
        assert b.untagged_responses.get("EXISTS", [])[-1] == b"3"
        fetches = b.untagged_responses.get("FETCH", [])
        assert any(b"\\Answered" in f for f in fetches if isinstance(f, bytes)), fetches
        b.untagged_responses.clear()
        a.store("2", "+FLAGS.SILENT", "(\\Deleted)")
        a.expunge()
        typ, data = b.noop()
        assert b.untagged_responses.get("EXPUNGE") == [b"2"]
    finally:
        a.logout()
        b.logout()


def test_login_disabled_without_tls_then_starttls(store: MailStore, tmp_path: Path) -> None:
    with ServerThread(store, tmp_path, tls=tls_manager(tmp_path / "tls"), allow_plaintext_on_loopback=False) as srv:
        client = imaplib.IMAP4("127.0.0.1", srv.port, timeout=10)
        try:
            assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
            assert "AUTH=PLAIN" not in client.capabilities
            with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
                client.login(ALICE, PASSWORD)
            client.starttls(client_tls())
            assert "LOGINDISABLED" not in client.capabilities and "STARTTLS" not in client.capabilities
            assert client.login(ALICE, PASSWORD)[0] == "OK"
        finally:
            client.logout()


def test_imaps_and_authenticate_plain(store: MailStore, tmp_path: Path) -> None:
    with ServerThread(store, tmp_path, tls=tls_manager(tmp_path / "tls"), implicit_tls=True,
                      allow_plaintext_on_loopback=False) as srv:
        client = imaplib.IMAP4_SSL("127.0.0.1", srv.port, ssl_context=client_tls(), timeout=10)
        try:
            assert "AUTH=PLAIN" in client.capabilities
            typ, _ = client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
            assert typ == "OK"
            assert client.select("INBOX")[0] == "OK"
        finally:
            client.logout()
