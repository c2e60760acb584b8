"""Issue 14: what bounds the work of LIST/LSUB: folders (with the parents CREATE and RENAME
make) and subscriptions (which outlive their folders) are capped."""

from __future__ import annotations

import pytest

from pigeon.store.mailbox import Account, MailboxError
from pigeon.store.mailbox import account as account_module


def _folders(account: Account) -> int:
    return sum(1 for i in account.list() if i.selectable)


def test_create_counts_the_parents_it_makes(account: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(account_module, "MAX_FOLDERS", 10)
    assert _folders(account) == 6  # INBOX and the five defaults
    with pytest.raises(MailboxError) as err:
        account.create("a/b/c/d/e")  # five folders: 11
    assert err.value.code == "LIMIT"
    assert _folders(account) == 6  # nothing made
    account.create("a/b/c/d")  # four: 10
    assert _folders(account) == 10
    with pytest.raises(MailboxError):
        account.create("z")


def test_rename_counts_the_parents_it_makes(account: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(account_module, "MAX_FOLDERS", 10)
    account.create("x")  # 7
    with pytest.raises(MailboxError) as err:  # RENAME used to add the parents of its new name freely
        account.rename("x", "p/q/r/s/x")  # four parents: 11
    assert err.value.code == "LIMIT"
    assert _folders(account) == 7
    account.rename("x", "p/q/r/x")  # three: 10
    assert _folders(account) == 10
    with pytest.raises(MailboxError):
        account.rename("p/q/r/x", "n/x")


def test_subscriptions_are_capped(account: Account, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(account_module, "MAX_SUBSCRIPTIONS", 8)
    assert len(account.subscriptions()) == 6
    for name in ("s1", "s2"):
        account.create(name)
        account.subscribe(name, True)
        account.delete(name)  # the subscription outlives the folder (RFC 3501 §6.3.6)
    assert len(account.subscriptions()) == 8
    account.create("s3")
    with pytest.raises(MailboxError) as err:
        account.subscribe("s3", True)
    assert err.value.code == "LIMIT"
    account.subscribe("Sent", True)  # already subscribed: not a new one
    account.subscribe("s1", False)
    account.subscribe("s3", True)
    assert "s3" in account.subscriptions()
