"""APPEND, read, STORE, EXPUNGE, remove, COPY, MOVE, cache, read-only views."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pigeon.store.mailbox import Account, MailboxError, MailStore
from pigeon.store.mailbox.flags import split_name
from tests.unit.store.mailbox.conftest import BOB, MSG


def _cur(maildir: Path, folder: str = "") -> list[str]:
    return sorted(os.listdir(maildir / folder / "cur"))


def test_append_writes_cur_with_flags_and_sizes(account: Account, maildir: Path) -> None:
    uv, uid = account.append("INBOX", MSG, frozenset({"\\Seen", "\\Flagged", "$Label1"}), 1_600_000_000.0)
    assert uid == 1 and uv == account.status("INBOX").uidvalidity
    (name,) = _cur(maildir)
    base, info = split_name(name)
    assert info == "FS"
    lf = MSG.replace(b"\r\n", b"\n")
    assert f",W={len(MSG)}" in base and f",S={len(lf)}" in base
    assert (maildir / "cur" / name).read_bytes() == MSG.replace(b"\r\n", b"\n")
    assert os.stat(maildir / "cur" / name).st_mtime == 1_600_000_000.0
    assert os.listdir(maildir / "tmp") == [] and os.listdir(maildir / "new") == []
    box = account.select("INBOX")
    try:
        (m,) = box.messages()
        assert m.flags == frozenset({"\\Seen", "\\Flagged", "$Label1"})
        assert (m.size, m.internaldate, m.uid) == (len(MSG), 1_600_000_000.0, 1)
        assert box.read(1) == MSG
        assert box.read_header(1) == MSG[: MSG.index(b"\r\n\r\n") + 4]
        assert m.path == maildir / "cur" / name
    finally:
        box.close()


def test_append_refusals(account: Account) -> None:
    with pytest.raises(MailboxError) as err:
        account.append("Nowhere", MSG, frozenset(), None)
    assert err.value.code == "NONEXISTENT"
    with pytest.raises(MailboxError) as err:
        account.append("INBOX", MSG, frozenset({"\\Bogus"}), None)
    assert err.value.code == "CANNOT"
    with pytest.raises(MailboxError) as err:
        account.append("INBOX", b"x" * (account.max_append() + 1), frozenset(), None)
    assert err.value.code == "LIMIT"
    assert account.status("INBOX").messages == 0


def test_append_uses_clock_for_internaldate(account: Account) -> None:
    account.append("INBOX", MSG, frozenset({"\\Recent"}), None)
    box = account.select("INBOX")
    try:
        assert box.messages()[0].internaldate == 1_700_000_000.0
        assert box.messages()[0].flags == frozenset()  # \Recent is never stored
    finally:
        box.close()


def test_read_header_without_body_and_bare_lf(account: Account) -> None:
    account.append("INBOX", b"Subject: x\r\nX: y", frozenset(), None)
    account.append("INBOX", b"A: 1\n\nbody\n", frozenset(), None)
    box = account.select("INBOX")
    try:
        assert box.read_header(1) == b"Subject: x\r\nX: y"
        assert box.read_header(2) == b"A: 1\r\n\r\n"
        assert box.read(2) == b"A: 1\r\n\r\nbody\r\n"
        assert box.messages()[1].size == len(box.read(2))
    finally:
        box.close()


def test_store_modes_rename_the_file(account: Account, maildir: Path) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        changed, failed = box.store([1], "add", frozenset({"\\Seen", "\\Answered", "Work"}))
        assert failed == [] and changed[0].flags == frozenset({"\\Seen", "\\Answered", "Work"})
        assert split_name(_cur(maildir)[0])[1] == "RS"
        assert changed[0].modseq > 1 and changed[0].path.exists()
        changed, _ = box.store([1], "remove", frozenset({"\\seen", "work"}))  # case-insensitive
        assert changed[0].flags == frozenset({"\\Answered"})
        changed, _ = box.store([1], "set", frozenset({"\\Draft", "\\Deleted"}))
        assert changed[0].flags == frozenset({"\\Draft", "\\Deleted"})
        assert split_name(_cur(maildir)[0])[1] == "DT"
        assert box.store([1], "add", frozenset({"\\Draft"})) == ([], [])  # no change, no modseq
        assert box.messages()[0].flags == frozenset({"\\Draft", "\\Deleted"})
        assert box.store([99], "add", frozenset({"\\Seen"})) == ([], [])
    finally:
        box.close()


def test_store_keeps_unknown_maildir_letters(account: Account, maildir: Path) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    (name,) = _cur(maildir)
    os.rename(maildir / "cur" / name, maildir / "cur" / (name + "P"))  # "passed" (bounced)
    box = account.select("INBOX")
    try:
        box.store([1], "set", frozenset({"\\Seen"}))
        assert split_name(_cur(maildir)[0])[1] == "PS"
    finally:
        box.close()


def test_store_unchangedsince(account: Account) -> None:
    """RFC 7162 §3.1.3: messages modified since are refused, the others changed."""
    for _ in range(2):
        account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        ms = {m.uid: m.modseq for m in box.messages()}
        box.store([2], "add", frozenset({"\\Flagged"}))
        changed, failed = box.store([1, 2], "add", frozenset({"\\Seen"}), unchangedsince=ms[2])
        assert [m.uid for m in changed] == [1] and failed == [2]
        assert "\\Seen" not in box.get(2).flags  # type: ignore[union-attr]
    finally:
        box.close()


def test_expunge_only_deleted_and_tombstones(account: Account, maildir: Path) -> None:
    for i in range(4):
        account.append("INBOX", MSG, frozenset({"\\Deleted"} if i % 2 else set()), None)
    box = account.select("INBOX")
    try:
        before = box.highestmodseq
        assert box.expunge([1, 2]) == [2]
        assert box.expunge() == [4]
        assert [m.uid for m in box.messages()] == [1, 3]
        assert len(_cur(maildir)) == 2
        assert box.expunged_since(before) == [2, 4]
        assert box.expunged_since(10_000) == []
        assert box.sync().empty  # our own expunges are not reported again
    finally:
        box.close()


def test_remove_ignores_deleted_flag(account: Account) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        assert box.remove([3, 1, 42]) == [1, 3]
        assert [m.uid for m in box.messages()] == [2]
    finally:
        box.close()


def test_uid_never_reused_after_expunge_and_reopen(tmp_path: Path, store: MailStore,
                                                   account: Account) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset({"\\Deleted"}), None)
    box = account.select("INBOX")
    assert box.expunge() == [1, 2, 3]
    box.close()
    uv = account.status("INBOX").uidvalidity
    store.close()
    again = MailStore(tmp_path / "mail", "mx.example.com", account._core.clock)
    try:
        acc = again.account(BOB)
        assert acc.append("INBOX", MSG, frozenset(), None) == (uv, 4)
    finally:
        again.close()


def test_copy_keeps_flags_keywords_date_and_cache(account: Account, maildir: Path) -> None:
    account.append("INBOX", MSG, frozenset({"\\Seen", "Important"}), 1_500_000_000.0)
    account.append("INBOX", MSG + b"2", frozenset(), None)
    account.append("Archive", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        box.cache_put(1, "envelope", b"(ENV)")
        uv, mapping = box.copy([2, 1, 77], "Archive")
        assert uv == account.status("Archive").uidvalidity
        assert mapping == [(1, 2), (2, 3)]
        assert len(box.messages()) == 2  # copy leaves the source alone
        arch = account.select("Archive")
        try:
            m = arch.get(2)
            assert m is not None and m.flags == frozenset({"\\Seen", "Important"})
            assert m.internaldate == 1_500_000_000.0 and m.size == len(MSG)
            assert arch.cache_get(2, "envelope") == b"(ENV)"
            assert arch.read(3) == MSG + b"2"
        finally:
            arch.close()
        assert len(_cur(maildir, ".Archive")) == 3
        with pytest.raises(MailboxError) as err:
            box.copy([1], "Missing")
        assert err.value.code == "NONEXISTENT"
    finally:
        box.close()


def test_move(account: Account, maildir: Path) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset({"\\Flagged"}), None)
    box = account.select("INBOX")
    other = account.select("INBOX")
    try:
        before = box.highestmodseq
        uv, mapping = box.move([1, 3], "Trash")
        assert mapping == [(1, 1), (3, 2)]
        assert [m.uid for m in box.messages()] == [2]
        assert box.expunged_since(before) == [1, 3]
        assert len(_cur(maildir)) == 1 and len(_cur(maildir, ".Trash")) == 2
        assert other.sync().expunged == [1, 3]
        st = account.status("Trash")
        assert (st.messages, st.uidvalidity) == (2, uv)
        # into the mailbox it is in (RFC 6851 does not forbid it; Dovecot allows it): a new
        # UID, the old one expunged, flags and content kept
        _, mapping = box.move([2], "INBOX")
        assert mapping == [(2, 4)]
        assert [m.uid for m in box.messages()] == []  # the view learns of 4 at its next sync
        assert [m.uid for m in box.sync().new] == [4]
        assert box.flags_of(4) == frozenset({"\\Flagged"}) and box.read(4) == MSG
        assert len(_cur(maildir)) == 1
        _, mapping = box.copy([4], "INBOX")
        assert mapping == [(4, 5)] and [m.uid for m in box.sync().new] == [5]
        assert len(_cur(maildir)) == 2
    finally:
        box.close()
        other.close()


def test_cache(account: Account) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX")
    try:
        assert box.cache_get(1, "bodystructure") is None
        box.cache_put(1, "bodystructure", b"(\"TEXT\")")
        box.cache_put(1, "bodystructure", b"(\"TEXT\" \"PLAIN\")")
        assert box.cache_get(1, "bodystructure") == b"(\"TEXT\" \"PLAIN\")"
        box.cache_put(9, "x", b"y")  # no such message: not stored
        assert box.cache_get(9, "x") is None
        box.store([1], "add", frozenset({"\\Deleted"}))
        box.expunge()
        assert box.cache_get(1, "bodystructure") is None
    finally:
        box.close()


def test_readonly_view_refuses_changes(account: Account) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    box = account.select("INBOX", readonly=True)
    try:
        for op in (lambda: box.store([1], "add", frozenset({"\\Seen"})), lambda: box.expunge(),
                   lambda: box.remove([1]), lambda: box.move([1], "Trash")):
            with pytest.raises(MailboxError) as err:
                op()
            assert err.value.code == "CANNOT"
        assert box.copy([1], "Trash")[1] == [(1, 1)]
        assert box.read(1) == MSG
    finally:
        box.close()


def test_recent_goes_to_the_first_view(account: Account) -> None:
    account.append("INBOX", MSG, frozenset(), None)
    peek = account.select("INBOX", readonly=True)
    first = account.select("INBOX")
    second = account.select("INBOX")
    try:
        assert peek.recent == 1 and first.recent == 1 and second.recent == 0
        assert first.is_recent(1) and not second.is_recent(1)
        account.append("INBOX", MSG, frozenset(), None)
        assert len(second.sync().new) == 1 and second.is_recent(2)
        assert len(first.sync().new) == 1 and not first.is_recent(2)
        assert account.status("INBOX").recent == 0
    finally:
        for b in (peek, first, second):
            b.close()
