"""context Rule 8: this process's own changes of ``cur/`` do not make the next scan list the
folder again; another program's change is still seen within ``scan.DIRTY_RELIST``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pigeon.store.mailbox import Account
from pigeon.store.mailbox.flags import cur_name, split_name
from pigeon.store.mailbox.scan import DIRTY_RELIST
from tests.unit.store.mailbox.conftest import MSG


def test_own_writes_keep_the_listing_and_a_foreign_rename_is_seen(account: Account, maildir: Path) -> None:
    for _ in range(3):
        account.append("INBOX", MSG, frozenset(), None)
    a = account.select("INBOX")
    b = account.select("INBOX")
    core = account._core
    row = core.index.folder_by_name("INBOX")
    assert row is not None
    fid = row.id
    a.sync(), b.sync()
    listed = core.scan_memo[fid][2]  # when cur/ was last listed
    a.store([1], "add", frozenset({"\\Flagged"}))
    account.append("INBOX", MSG, frozenset({"\\Deleted"}), None)
    changes = b.sync()
    assert [m.uid for m in changes.changed] == [1] and [m.uid for m in changes.new] == [4]
    assert b.expunge() == [4]
    a.sync()
    assert core.scan_memo[fid][2] == listed  # no listing: the index had every change
    # Another program (mutt) marks message 2 \Seen by renaming its file.
    cur = maildir / "cur"
    meta = b.get(2)
    assert meta is not None
    os.rename(meta.path, cur / cur_name(split_name(meta.filename)[0], "S"))
    time.sleep(DIRTY_RELIST * 1.5)
    changes = a.sync()
    assert [(m.uid, "\\Seen" in m.flags) for m in changes.changed] == [(2, True)]
    assert core.scan_memo[fid][2] > listed
    a.close(), b.close()
