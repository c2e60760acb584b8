"""The maildrop snapshot: numbering, deletion marks, RSET, unique ids, what QUIT removes."""

from __future__ import annotations

from pigeon.pop3d.maildrop import Entry, Maildrop
from pigeon.proto.pop3.responses import ERR_MESSAGE_DELETED, ERR_NO_SUCH_MESSAGE


def drop() -> Maildrop:
    return Maildrop(77, [(3, 100), (8, 250), (9, 40)])


def test_numbering_and_stat() -> None:
    m = drop()
    assert len(m) == 3
    assert m.stat() == (3, 390)
    assert m.message(2) == Entry(2, 8, 250)
    assert m.message(0) is ERR_NO_SUCH_MESSAGE
    assert m.message(4) is ERR_NO_SUCH_MESSAGE
    assert m.unique_id(Entry(2, 8, 250)) == "77.8"


def test_delete_reset_and_update_lists() -> None:
    m = drop()
    assert m.delete(1) == Entry(1, 3, 100)
    assert m.delete(1) is ERR_MESSAGE_DELETED
    assert m.message(1) is ERR_MESSAGE_DELETED
    assert m.stat() == (2, 290)
    assert [e.number for e in m.live()] == [2, 3]
    m.reset()
    assert m.stat() == (3, 390)
    m.delete(3)
    m.retrieved.update({2, 3})
    assert m.to_remove() == [9]
    assert m.to_mark_seen() == [8]  # retrieved and kept; a deleted one is not flagged


def test_empty_maildrop() -> None:
    m = Maildrop(1, [])
    assert m.stat() == (0, 0)
    assert m.message(1) is ERR_NO_SUCH_MESSAGE
    assert m.to_remove() == [] and m.to_mark_seen() == []
