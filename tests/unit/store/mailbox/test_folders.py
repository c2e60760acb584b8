"""Folder names, defaults, CREATE/DELETE/RENAME/SUBSCRIBE/LIST/STATUS (pigeon.store.mailbox)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pigeon.store.mailbox import Account, MailboxError, MailStore, folders
from tests.unit.store.mailbox.conftest import BOB, MSG


def _dirs(maildir: Path) -> set[str]:
    return {n for n in os.listdir(maildir) if n.startswith(".")}


def test_default_folders_with_special_use_and_subscribed(account: Account, maildir: Path) -> None:
    infos = {i.name: i for i in account.list()}
    assert list(infos)[0] == "INBOX"
    assert {n: i.special_use for n, i in infos.items()} == {
        "INBOX": None, "Archive": "\\Archive", "Drafts": "\\Drafts", "Junk": "\\Junk",
        "Sent": "\\Sent", "Trash": "\\Trash"}
    assert all(i.subscribed and i.selectable and not i.has_children for i in infos.values())
    assert _dirs(maildir) == {".Sent", ".Drafts", ".Trash", ".Junk", ".Archive"}
    assert (maildir / ".Sent" / "maildirfolder").exists()
    assert (maildir / "pigeon-index.sqlite3").exists()
    for sub in ("cur", "new", "tmp"):
        assert (maildir / ".Sent" / sub).is_dir()


def test_deleted_default_folder_is_not_recreated(tmp_path: Path, store: MailStore,
                                                 account: Account) -> None:
    account.delete("Junk")
    store.close()
    again = MailStore(tmp_path / "mail", "mx.example.com", account._core.clock)
    try:
        assert "Junk" not in {i.name for i in again.account(BOB).list()}
    finally:
        again.close()


@pytest.mark.parametrize(("name", "dirname"), [
    ("Work", ".Work"),
    ("a/b", ".a.b"),
    ("a.b", ".a%2Eb"),
    (".hidden", ".%2Ehidden"),
    ("100%", ".100%25"),
    ("back\\slash", ".back%5Cslash"),
    ("Jürgen ☃", ".Jürgen ☃"),
    ("inbox/sub", ".INBOX.sub"),
])
def test_name_encoding(account: Account, maildir: Path, name: str, dirname: str) -> None:
    account.create(name)
    assert dirname in _dirs(maildir)
    assert folders.decode_dir(dirname) == folders.normalize(name)
    assert folders.normalize(name) in {i.name for i in account.list()}


@pytest.mark.parametrize("name", [
    "", "/", "/abs", "a//b", "a/", "a/./b", "..", ".", "a/..", "../../etc", "x/../../y",
    "nul\x00", "cr\rlf", "lf\nx", "tab\tx", "del\x7f", "\ud800", "x" * 300,
])
def test_refused_names(account: Account, maildir: Path, tmp_path: Path, name: str) -> None:
    before = set(os.listdir(tmp_path)), _dirs(maildir)
    for op in (lambda: account.create(name + "/" if name == "a/" else name),
               lambda: account.status(name), lambda: account.select(name),
               lambda: account.delete(name), lambda: account.subscribe(name, True),
               lambda: account.append(name, MSG, frozenset(), None)):
        with pytest.raises(MailboxError) as err:
            op()
        assert err.value.code == "CANNOT", (name, err.value)
    assert (set(os.listdir(tmp_path)), _dirs(maildir)) == before


def test_trailing_separator_in_create_is_ignored(account: Account, maildir: Path) -> None:
    account.create("Projects/")
    assert ".Projects" in _dirs(maildir)


def test_name_length_limit(account: Account) -> None:
    account.create("x" * (folders.NAME_MAX - 1))
    with pytest.raises(MailboxError) as err:
        account.create("x" * folders.NAME_MAX)
    assert err.value.code == "CANNOT"
    with pytest.raises(MailboxError):
        account.create("%" * 90)  # 270 octets once escaped


def test_decode_dir_accepts_only_canonical_names() -> None:
    assert folders.decode_dir(".a%2Eb") == "a.b"
    for bad in (".a%2eb", ".%41", ".a..b", "..deleted-x", ".a%", ".a%ZZ", "cur", ".INBOX", ".a.b."):
        assert folders.decode_dir(bad) is None, bad


def test_inbox_is_case_insensitive(account: Account) -> None:
    uv, uid = account.append("inbox", MSG, frozenset(), None)
    assert account.status("InBoX").messages == 1
    with pytest.raises(MailboxError) as err:
        account.create("Inbox")
    assert err.value.code == "ALREADYEXISTS"


def test_create_existing_and_parents(account: Account) -> None:
    with pytest.raises(MailboxError) as err:
        account.create("Sent")
    assert err.value.code == "ALREADYEXISTS"
    account.create("a/b/c")
    infos = {i.name: i for i in account.list()}
    assert infos["a"].selectable and infos["a"].has_children
    assert infos["a/b"].has_children and not infos["a/b/c"].has_children


def test_create_special_use(account: Account) -> None:
    account.create("Old", special_use="\\archive")
    assert {i.name: i.special_use for i in account.list()}["Old"] == "\\Archive"
    with pytest.raises(MailboxError) as err:
        account.create("Every", special_use="\\All")
    assert err.value.code == "USEATTR"


def test_delete(account: Account, maildir: Path) -> None:
    with pytest.raises(MailboxError) as err:
        account.delete("INBOX")
    assert err.value.code == "CANNOT"
    with pytest.raises(MailboxError) as err:
        account.delete("Nope")
    assert err.value.code == "NONEXISTENT"
    account.create("p/q")
    account.append("p", MSG, frozenset(), None)
    account.delete("p")
    infos = {i.name: i for i in account.list()}
    assert not infos["p"].selectable and infos["p"].has_children  # \Noselect node
    assert infos["p/q"].selectable
    with pytest.raises(MailboxError) as err:
        account.select("p")
    assert err.value.code == "NONEXISTENT"
    assert not any(n.startswith("..") for n in os.listdir(maildir))


def test_recreated_folder_gets_new_uidvalidity(account: Account) -> None:
    account.create("Box")
    first = account.status("Box").uidvalidity
    account.delete("Box")
    account.create("Box")
    assert account.status("Box").uidvalidity > first


def test_rename_keeps_uidvalidity_and_moves_children(account: Account, maildir: Path) -> None:
    account.create("old/kid")
    account.subscribe("old/kid", True)
    account.append("old", MSG, frozenset({"\\Seen"}), None)
    st = account.status("old")
    account.rename("old", "new/place")
    assert {".new", ".new.place", ".new.place.kid"} <= _dirs(maildir)
    assert ".old" not in _dirs(maildir) and ".old.kid" not in _dirs(maildir)
    moved = account.status("new/place")
    assert (moved.uidvalidity, moved.messages, moved.uidnext) == (st.uidvalidity, 1, st.uidnext)
    assert "new/place/kid" in account.subscriptions()
    with pytest.raises(MailboxError) as err:
        account.rename("new/place", "Sent")
    assert err.value.code == "ALREADYEXISTS"
    with pytest.raises(MailboxError) as err:
        account.rename("Nope", "Other")
    assert err.value.code == "NONEXISTENT"
    with pytest.raises(MailboxError) as err:
        account.rename("new/place", "new/place/deeper")
    assert err.value.code == "CANNOT"


def test_rename_inbox_moves_messages_and_leaves_it_empty(account: Account) -> None:
    """RFC 3501 §6.3.5."""
    account.create("INBOX/child")
    for i in range(3):
        account.append("INBOX", MSG + b"%d" % i, frozenset({"\\Flagged"} if i == 1 else set()), None)
    inbox = account.status("INBOX")
    account.rename("INBOX", "Saved")
    assert account.status("INBOX").messages == 0
    assert account.status("INBOX").uidvalidity == inbox.uidvalidity
    assert account.status("INBOX").uidnext == inbox.uidnext  # UIDs are not reused
    saved = account.select("Saved")
    try:
        msgs = saved.messages()
        assert [m.uid for m in msgs] == [1, 2, 3]
        assert msgs[1].flags == frozenset({"\\Flagged"})
        assert saved.read(3).endswith(b"2")
    finally:
        saved.close()
    assert "INBOX/child" in {i.name for i in account.list()}


def test_subscribe(account: Account) -> None:
    account.create("Lists")
    account.subscribe("Lists", True)
    assert {i.name: i.subscribed for i in account.list()}["Lists"]
    account.subscribe("Lists", False)
    assert not {i.name: i.subscribed for i in account.list()}["Lists"]
    with pytest.raises(MailboxError) as err:
        account.subscribe("Missing", True)
    assert err.value.code == "NONEXISTENT"
    account.subscribe("Missing", False)  # unsubscribing is always fine


def test_status_counts(account: Account) -> None:
    account.append("INBOX", MSG, frozenset({"\\Seen"}), None)
    account.append("INBOX", MSG, frozenset({"\\Deleted", "\\Seen"}), None)
    account.append("INBOX", MSG, frozenset(), None)
    st = account.status("INBOX")
    assert (st.messages, st.unseen, st.deleted, st.uidnext) == (3, 1, 1, 4)
    assert st.size == 3 * len(MSG)
    assert st.recent == 3
    assert st.highestmodseq >= 4


def test_folder_made_by_another_tool_is_listed(account: Account, maildir: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(maildir / ".FromMutt" / sub)
    (maildir / ".FromMutt" / "new" / "1.M1P1.host,S=3").write_bytes(b"a\nb")
    assert "FromMutt" in {i.name for i in account.list()}
    assert account.status("FromMutt").messages == 1
    assert account.status("FromMutt").size == 4  # computed: one LF becomes CRLF


def test_unmappable_address_is_refused(store: MailStore) -> None:
    from pigeon.core.address import Address
    with pytest.raises(MailboxError) as err:
        store.account(Address("x" * 300, "example.com"))
    assert err.value.code == "CANNOT"
