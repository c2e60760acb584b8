"""Issue 14: APPEND from a stream, read in pieces (a big IMAP APPEND is never in memory whole),
and the anonymous spool file a session receives it in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.store.mailbox import Account, MailboxError, MailStore
from tests.unit.store.mailbox.conftest import BOB, MSG


class _Chunks:
    """A stream that hands out at most 1000 octets per read and counts the reads."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self.reads = 0

    def read(self, n: int = -1, /) -> bytes:
        self.reads += 1
        take = 1000 if n < 0 else min(n, 1000)
        out = self._data[self._pos : self._pos + take]
        self._pos += len(out)
        return out


def test_append_from_a_stream(account: Account, maildir: Path) -> None:
    data = MSG + b"more body\r\n" * 500
    stream = _Chunks(data)
    _, uid = account.append("INBOX", stream, frozenset({"\\Seen"}), None)
    assert stream.reads > 5  # read piece by piece
    box = account.select("INBOX")
    try:
        assert box.read(uid) == data
        assert box.messages()[0].size == len(data)
    finally:
        box.close()


def test_append_from_a_stream_over_the_limit_leaves_nothing(tmp_path: Path, clock: FakeClock) -> None:
    store = MailStore(tmp_path / "small", "mx.example.com", clock, max_append=5000)
    try:
        account = store.account(BOB)
        with pytest.raises(MailboxError) as err:
            account.append("INBOX", _Chunks(b"x" * 5001), frozenset(), None)
        assert err.value.code == "LIMIT"
        account.append("INBOX", _Chunks(b"x" * 5000), frozenset(), None)
        assert account.status("INBOX").messages == 1
        maildir = tmp_path / "small" / "example.com" / "bob"
        assert os.listdir(maildir / "tmp") == [] and len(os.listdir(maildir / "cur")) == 1
    finally:
        store.close()


def test_temporary_file_is_anonymous_in_the_maildir(account: Account, maildir: Path) -> None:
    with account.temporary_file() as f:
        f.write(b"spool")
        assert os.listdir(maildir / "tmp") == []
        assert os.readlink(f"/proc/self/fd/{f.fileno()}").startswith(str(maildir / "tmp") + "/")
