"""Shared snapshots of a folder's message list (``store.mailbox.snapshot``, ``view`` Rule 7)."""

from __future__ import annotations

from pigeon.store.mailbox import Account, Mailbox, MailStore, MessageMeta
from pigeon.store.mailbox.snapshot import WarmSnapshots
from tests.unit.store.mailbox.conftest import MSG

SEEN = frozenset({"\\Seen"})


def _fill(account: Account, n: int) -> None:
    for i in range(n):
        account.append("INBOX", MSG + b"%d\r\n" % i, frozenset({"$k%d" % (i % 3)}) if i % 2 else frozenset(), None)


def _fresh(account: Account) -> list[MessageMeta]:
    """The folder as a full read of the index gives it (no shared or warm snapshot)."""
    core = account._core
    core.snapshots.clear()
    core.warm.forget(str(core.maildir))
    box = account.select("INBOX")
    try:
        return box.messages()
    finally:
        box.close()


def _plain(msgs: list[MessageMeta]) -> list[tuple[int, frozenset[str], int, float, int, str]]:
    return [(m.uid, m.flags, m.size, m.internaldate, m.modseq, m.filename) for m in msgs]


def test_views_share_one_snapshot_until_their_own_change(account: Account) -> None:
    _fill(account, 6)
    a, b = account.select("INBOX"), account.select("INBOX")
    try:
        assert a._snap is b._snap
        assert list(a.uids()) == [1, 2, 3, 4, 5, 6]
        a.store([2], "add", SEEN)
        assert a.flags_of(2) == SEEN | {"$k1"}  # message 2 was appended with $k1
        assert b.flags_of(2) == {"$k1"}  # copy-on-write: b keeps its snapshot
        changes = b.sync()
        assert [m.uid for m in changes.changed] == [2] and b.flags_of(2) == SEEN | {"$k1"}
        assert _plain(a.messages()) == _plain(b.messages()) == _plain(_fresh(account))
    finally:
        a.close()
        b.close()


def test_derived_snapshot_equals_a_full_read(account: Account) -> None:
    _fill(account, 20)
    old = account.select("INBOX")  # holds the old snapshot, so the next SELECT derives
    other = account.select("INBOX")
    try:
        other.store([3, 4, 19], "add", SEEN | {"\\Deleted"})
        other.expunge([3, 19])
        other.store([5], "set", frozenset({"$new"}))
        account.append("INBOX", MSG, SEEN, None)
        derived = account.select("INBOX")
        try:
            assert derived._snap is not old._snap
            got = _plain(derived.messages())
            assert [u for u, *_ in got] == [1, 2] + list(range(4, 19)) + [20, 21]
            assert got == _plain(_fresh(account))
            assert derived.summary() == (["$k0", "$k1", "$k2", "$new"], 1)
        finally:
            derived.close()
    finally:
        old.close()
        other.close()


def test_rows_and_summary_follow_the_overlay(account: Account) -> None:
    _fill(account, 4)
    box: Mailbox = account.select("INBOX")
    try:
        box.store([1, 2, 3, 4], "add", SEEN)
        box.store([2], "add", frozenset({"\\Deleted"}))
        assert box.expunge() == [2]
        assert box.summary() == (["$k0"], None)  # $k1 left with message 2
        rows = box.rows([1, 2, 3, 4, 99])
        assert [r[0] for r in rows] == [1, 3, 4]
        assert all(box.flag_set(r[1]) == box.flags_of(r[0]) for r in rows)
        assert box.flag_text(rows[0][1]) == b"\\Seen"
        assert [m.uid for m in box.changed_since(0)] == [1, 3, 4]
        account.append("INBOX", MSG, frozenset(), None)
        assert [m.uid for m in box.sync().new] == [5]
        assert list(box.uids()) == [1, 3, 4, 5]
        assert box.summary()[1] == 4
    finally:
        box.close()


def test_warm_cache_keeps_a_closed_folder_and_is_bounded(store: MailStore, account: Account) -> None:
    _fill(account, 3)
    box = account.select("INBOX")
    snap = box._snap
    box.close()
    del box
    again = account.select("INBOX")
    try:
        assert again._snap is snap  # no index read for an unchanged folder
    finally:
        again.close()
    warm = WarmSnapshots(max_messages=4)
    warm.keep("a", snap)
    warm.keep("b", snap)  # 6 > 4: the least recently used goes
    assert len(warm._lru) == 1 and warm._count == 3
    warm.forget("b")
    assert warm._count == 0


def test_rows_of_a_run_equal_rows_one_by_one(account: Account) -> None:
    _fill(account, 8)
    box = account.select("INBOX")
    try:
        for wanted in ([1, 2, 3, 4, 5, 6, 7, 8], [3, 4, 5], [2, 5, 6], [7, 8, 9], [8]):
            run = box.rows(wanted)  # a list: the slice fast path when it is a run
            slow = box.rows(iter(wanted))  # an iterator: one lookup per UID
            assert run == slow and [r[0] for r in run] == [u for u in wanted if u <= 8]
        box.store([4], "add", SEEN)  # an overlay: the fast path steps aside
        assert box.rows([3, 4, 5]) == box.rows(iter([3, 4, 5]))
        assert box.flag_set(box.rows([4])[0][1]) == SEEN | {"$k0"}
    finally:
        box.close()


def test_sequence_numbers_of_runs_and_gaps(account: Account) -> None:
    from pigeon.imapd.selected import Modes, Selected

    _fill(account, 6)
    box = account.select("INBOX")
    try:
        box.store([3], "add", frozenset({"\\Deleted"}))
        box.expunge()
        sel = Selected(box, Modes())  # UIDs 1 2 4 5 6
        assert list(sel.seqs_of([1, 2, 4, 5, 6])) == [1, 2, 3, 4, 5]
        assert list(sel.seqs_of([4, 5])) == [3, 4]
        assert list(sel.seqs_of([2, 5])) == [2, 4]  # not a run: one by one
        assert list(sel.seqs_of([5, 6, 7])) == [4, 5, None]
    finally:
        box.close()


def test_cache_many_reads_a_batch_and_leaves_large_values_out(account: Account) -> None:
    from pigeon.store.mailbox.view import PREFETCH_VALUE

    _fill(account, 4)
    box = account.select("INBOX")
    try:
        box.cache_put(1, "envelope", b"(small)")
        box.cache_put(2, "envelope", b"x" * (PREFETCH_VALUE + 1))
        box.cache_put(3, "bodystructure", b"(bs)")
        got = box.cache_many([1, 2, 4], ["envelope", "bodystructure"])
        # 1: read in bulk; 2: cached but too large (None: ask cache_get); 3 not asked; 4 not cached
        assert got == {(1, "envelope"): b"(small)", (2, "envelope"): None}
        assert box.cache_get(2, "envelope") == b"x" * (PREFETCH_VALUE + 1)
        assert box.cache_many([], ["envelope"]) == {} and box.cache_many([1], []) == {}
    finally:
        box.close()


def test_summary_is_computed_once_per_snapshot_and_not_shared_by_reference(account: Account) -> None:
    _fill(account, 5)
    account.select("INBOX").close()
    a, b = account.select("INBOX"), account.select("INBOX")
    try:
        first = a.summary()
        assert a._snap.summary is not None
        first[0].append("$mutated")  # the caller's list, not the cached one
        assert b.summary() == (["$k0", "$k1"], 1)
        b.store([1, 2, 3, 4, 5], "add", SEEN)  # b's overlay: computed from it, cache untouched
        assert b.summary() == (["$k0", "$k1"], None)
        assert a.summary() == (["$k0", "$k1"], 1)
    finally:
        a.close()
        b.close()


def test_a_long_lived_view_rebases_onto_the_shared_snapshot(account: Account) -> None:
    from pigeon.store.mailbox.view import REBASE_SLACK

    _fill(account, 10)
    idle = account.select("INBOX")  # an IDLE session that stays
    other = account.select("INBOX")
    try:
        for _ in range(REBASE_SLACK + 5):  # deliveries while it idles
            account.append("INBOX", MSG, frozenset(), None)
        other.store([1, 2], "add", SEEN)
        changes = idle.sync()
        assert len(changes.new) == REBASE_SLACK + 5 and [m.uid for m in changes.changed] == [1, 2]
        assert idle._over == {}  # rebased: nothing private left
        shared = account.select("INBOX")
        try:
            assert shared._snap is idle._snap
        finally:
            shared.close()
        assert _plain(idle.messages()) == _plain(_fresh(account))
        assert idle.flags_of(1) == SEEN and list(idle.uids()) == list(range(1, 11 + REBASE_SLACK + 5))
    finally:
        idle.close()
        other.close()


def test_concurrent_sessions_stay_consistent_with_the_index(account: Account) -> None:
    """Several threads, each its own view of INBOX, storing, expunging, appending and
    re-selecting at once; afterwards every view, once synced, equals a fresh read."""
    import random
    import threading

    _fill(account, 40)
    errors: list[BaseException] = []
    views: list[Mailbox] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        box = account.select("INBOX")
        try:
            for _ in range(60):
                box.sync()
                uids = list(box.uids())
                op = rnd.random()
                if op < 0.4 and uids:
                    box.store(rnd.sample(uids, min(3, len(uids))), rnd.choice(["add", "remove"]),
                              rnd.choice([SEEN, frozenset({"$x"}), frozenset({"\\Deleted"})]))
                elif op < 0.55:
                    box.expunge()
                elif op < 0.75:
                    account.append("INBOX", MSG, frozenset({"$new"}), None)
                elif op < 0.9:
                    box.close()
                    box = account.select("INBOX")  # shares, derives or builds a snapshot
                elif uids:
                    box.get(rnd.choice(uids))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            with lock:
                views.append(box)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        truth = _plain(_fresh(account))
        for box in views:
            box.sync()
            assert [(u, f) for u, f, *_ in _plain(box.messages())] == [(u, f) for u, f, *_ in truth]
    finally:
        for box in views:
            box.close()


def test_rows_of_many_uids_with_an_overlay_equal_the_one_by_one_answer(account: Account) -> None:
    """``Mailbox.rows`` reads the whole view in one pass for many UIDs (view Rule 7): with an
    overlay of changed, expunged and new messages it gives what looking up each UID gives."""
    import random

    from pigeon.store.mailbox import view as V

    _fill(account, 60)
    box, other = account.select("INBOX"), account.select("INBOX")
    try:
        box.store([3, 9, 10, 40], "add", SEEN)
        other.store([5, 6, 7], "add", frozenset({"\\Deleted"}))
        other.expunge()
        for i in range(4):
            account.append("INBOX", MSG + b"new %d\r\n" % i, frozenset(), None)
        box.sync()
        assert box._over  # changed, gone and new messages all in the overlay
        uids = list(box.uids())
        rnd = random.Random(3)
        for wanted in (uids, uids[10:], uids[:-2] + [999], sorted(rnd.sample(uids, 40)), [5, 6, 7, *uids]):
            wanted = sorted(set(wanted))
            bulk = box.rows(wanted)
            one_by_one = [r for u in wanted for r in box.rows([u])]
            assert bulk == one_by_one
            assert len(wanted) > len(uids) // V.BULK_ROWS_FRACTION  # the bulk path was taken
    finally:
        box.close()
        other.close()
