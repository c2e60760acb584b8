"""POP3 over the real mailbox store (``pigeon.store.mailbox``: Maildir + SQLite index), with poplib.

What the issue asks of the pair: sizes with CRLF before dot-stuffing, UIDL = the IMAP
(UIDVALIDITY, UID) pair and stable across sessions, deletions only at QUIT, and an IMAP view
of the same INBOX that sees POP3's deletions as expunges.
"""

from __future__ import annotations

import poplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.clocks import SystemClock
from pigeon.core.address import parse_address
from pigeon.store.mailbox import MailStore
from tests.unit.pop3d.fakes import PASSWORD, ServerThread

ALICE = "alice@example.test"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MailStore]:
    s = MailStore(tmp_path / "mail", "pop.example.test", SystemClock())
    try:
        yield s
    finally:
        s.close()


def deliver(store: MailStore, data: bytes) -> int:
    _, uid = store.account(parse_address(ALICE)).append("INBOX", data, frozenset(), None)
    return uid


def login(server: ServerThread) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.port, timeout=10)
    client.user(ALICE)
    client.pass_(PASSWORD)
    return client


def test_retr_sizes_and_uidl_match_the_store(store: MailStore) -> None:
    bodies = [
        b"Subject: one\r\n\r\nhello\r\n",
        b"Subject: two\n\n.dot line\nbare LF lines\n",  # stored with CRLF line ends
        b"Subject: three\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100 + b".\r\n",
    ]
    uids = [deliver(store, b) for b in bodies]
    account = store.account(parse_address(ALICE))
    uidvalidity = account.status("INBOX").uidvalidity
    with ServerThread(store) as server:
        client = login(server)
        try:
            expected = [b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for b in bodies]
            count, octets = client.stat()
            assert (count, octets) == (3, sum(len(e) for e in expected))
            _, listing, _ = client.list()
            assert listing == [f"{i + 1} {len(e)}".encode() for i, e in enumerate(expected)]
            for i, e in enumerate(expected, start=1):
                _, lines, _ = client.retr(i)
                assert b"\r\n".join(lines) + b"\r\n" == e
            _, ids, _ = client.uidl()
            assert ids == [f"{i + 1} {uidvalidity}.{u}".encode() for i, u in enumerate(uids)]
        finally:
            client.quit()


def test_dele_at_quit_is_an_expunge_for_imap(store: MailStore) -> None:
    for n in range(4):
        deliver(store, f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())
    account = store.account(parse_address(ALICE))
    imap_view = account.select("INBOX")  # an IMAP session on the same INBOX, working alongside
    try:
        before = [m.uid for m in imap_view.messages()]
        with ServerThread(store) as server:
            client = login(server)
            client.retr(1)
            client.dele(2)
            client.dele(3)
            assert imap_view.sync().expunged == []  # nothing happens before QUIT
            client.quit()
            changes = imap_view.sync()
            assert sorted(changes.expunged) == before[1:3]
            remaining = {m.uid: m for m in imap_view.messages()}
            assert sorted(remaining) == [before[0], before[3]]
            assert "\\Seen" in remaining[before[0]].flags  # retrieved by POP3 and kept
            assert "\\Seen" not in remaining[before[3]].flags
            # a second POP3 session sees the same unique ids for what is left
            client = login(server)
            _, ids, _ = client.uidl()
            uidvalidity = imap_view.uidvalidity
            assert ids == [f"1 {uidvalidity}.{before[0]}".encode(), f"2 {uidvalidity}.{before[3]}".encode()]
            client.quit()
    finally:
        imap_view.close()


def test_message_expunged_by_imap_during_the_session(store: MailStore) -> None:
    deliver(store, b"Subject: a\r\n\r\na\r\n")
    deliver(store, b"Subject: b\r\n\r\nb\r\n")
    account = store.account(parse_address(ALICE))
    with ServerThread(store) as server:
        client = login(server)
        try:
            imap_view = account.select("INBOX")
            try:
                imap_view.remove([imap_view.messages()[0].uid])
            finally:
                imap_view.close()
            assert client.stat()[0] == 2  # the snapshot stands
            with pytest.raises(poplib.error_proto, match="removed by another session"):
                client.retr(1)
            _, lines, _ = client.retr(2)
            assert lines[-1] == b"b"
            client.dele(1)  # already gone: QUIT still succeeds
        finally:
            assert client.quit().startswith(b"+OK")
    view = account.select("INBOX")
    try:
        assert len(view.messages()) == 1
    finally:
        view.close()


def test_empty_maildrop_for_a_new_account(store: MailStore) -> None:
    with ServerThread(store) as server:
        client = login(server)
        try:
            assert client.stat() == (0, 0)
            assert client.list()[1] == []
            assert client.uidl()[1] == []
        finally:
            client.quit()
