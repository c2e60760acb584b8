"""``queue.intake_journal`` on its own: which mail takes the journal (rule 1), owner names
(rule 5), and the journals on the disk leaving out what a state directory holds (rule 6).
The commit, spill and recovery paths are tested through the store (test_queue_journal.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.core.queueid import QueueId
from pigeon.durable.commit import GroupCommit
from pigeon.durable.io import REAL
from pigeon.queue import intake_journal
from pigeon.queue.intake_journal import IntakeJournal, owner_dir
from pigeon.queue.record import RcptState
from pigeon.queue.store import QueueStore
from tests.unit.queue.test_queue_journal import BODY, envelope

LOCAL = Address("bob", "local.test")
REMOTE = Address("carol", "remote.test")


def rcpt(a: Address, status: str = "pending") -> RcptState:
    r = RcptState(a, a, ("FAILURE",), f"rfc822;{a}")
    r.status = status  # type: ignore[assignment]
    return r


def is_local(domain: str) -> bool:
    return domain == "local.test"


@pytest.mark.parametrize(("rcpts", "relay", "takes"), [
    ([LOCAL], False, True),
    ([LOCAL, LOCAL], True, True),
    ([REMOTE], False, False),  # remote mail takes the journal only with relay
    ([REMOTE], True, True),
    ([LOCAL, REMOTE], True, False),  # mixed: the queue files
    ([], True, False),
])
def test_which_mail_takes_the_journal(rcpts: list[Address], relay: bool, takes: bool) -> None:  # rule 1
    assert IntakeJournal.takes([rcpt(a) for a in rcpts], is_local, relay) is takes


def test_a_recipient_not_pending_or_no_directory_sends_mail_to_the_files() -> None:  # rule 1
    assert not IntakeJournal.takes([rcpt(LOCAL, "deferred")], is_local, True)
    assert not IntakeJournal.takes([rcpt(LOCAL)], None, True)


@pytest.mark.parametrize("name", ["", "../x", "w-1", "wé", "a/b"])
def test_owner_names_are_letters_and_digits(name: str) -> None:  # rule 5
    with pytest.raises(ValueError):
        owner_dir(name)
    assert owner_dir("w12") == "w12"


def test_a_second_journal_of_a_worker_owner_is_refused_while_the_first_runs(tmp_path: Path) -> None:  # rule 5
    commits = GroupCommit(REAL)
    first = IntakeJournal(tmp_path, "w1", commits, REAL, lambda r: None)
    try:
        with pytest.raises(OSError):
            IntakeJournal(tmp_path, "w1", commits, REAL, lambda r: None)
    finally:
        first.close()
        commits.close()
    second = IntakeJournal(tmp_path, "w1", GroupCommit(REAL), REAL, lambda r: None)  # let go: free again
    second.close()


def test_the_disk_listing_leaves_out_what_a_state_directory_holds(tmp_path: Path) -> None:  # rule 6
    store = QueueStore(tmp_path / "queue", FakeClock(), journal=True)
    try:
        body = store.new_body()
        body.write(BODY)
        record = asyncio.run(store.commit(body, envelope(LOCAL), [rcpt(LOCAL)], fast=True))
        root = tmp_path / "queue"
        listed = intake_journal.pending_messages(root, lambda q: False)
        assert [r.id for r in listed] == [record.id] and listed[0].state == "journal"
        found = intake_journal.pending_entry(root, record.id, lambda q: False)
        assert found is not None and found[1] == BODY
        assert intake_journal.pending_messages(root, lambda q: q == record.id) == []
        assert intake_journal.pending_entry(root, record.id, lambda q: True) is None
        assert intake_journal.pending_entry(root, QueueId("not-an-id"), lambda q: False) is None
    finally:
        store.close()
