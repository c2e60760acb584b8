"""imapd.search rules 5, 7, 8: the set-wise evaluation of metadata keys, the INTERNALDATE day
bounds and the header pre-filter give exactly what matching each message one by one gives,
on a real store (messages with system flags, keywords, dates around midnight, non-ASCII
senders whose case folding changes their ASCII form)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from pigeon.core.address import parse_address
from pigeon.imapd import search as S
from pigeon.imapd.headermemo import HeaderMemo
from pigeon.imapd.selected import Modes, Selected
from pigeon.proto.imap import commands as c
from pigeon.proto.imap.connection import ImapServerConnection
from pigeon.proto.imap.events import Command
from pigeon.proto.imap.parser import parse_command
from pigeon.store.mailbox import MailStore

SENDERS = ["Anna <anna@example.org>", "=?utf-8?q?Stra=C3=9Fe?= <x1@example.org>",
           "=?utf-8?q?=E2=84=AA?= <x2@example.org>", "Bob \"the\" Builder <bob@example.org>",
           "user17 <user17@example.org>", "USER170 <u170@example.org>"]
FLAGS = ["\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "$Work", "$work2", "Junk"]


def _message(n: int, sender: str) -> bytes:
    return (f"From: {sender}\r\nTo: alice@example.test\r\nSubject: note {n}\r\n"
            f"Date: Mon, {1 + n % 27} Feb 2026 10:00:00 +0000\r\n\r\n" + "body text\r\n" * (n % 7)).encode()


@pytest.fixture
def selected(store: MailStore) -> Selected:
    rnd = random.Random(18)
    acct = store.account(parse_address("alice@example.test"))
    base = dt.datetime(2026, 2, 10).timestamp()  # local midnight: dates on both sides of it
    for n in range(80):
        flags = frozenset(f for f in FLAGS if rnd.random() < 0.3)
        when = base + rnd.choice((-86400, -1, -0.5, 0, 0.5, 3600, 86399.5, 86400, 200000)) + rnd.choice((0, 0, 0.001))
        acct.append("INBOX", _message(n, rnd.choice(SENDERS)), flags, when)
    return Selected(acct.select("INBOX"), Modes())


def _criteria(text: bytes) -> c.SearchAnd:
    conn = ImapServerConnection(max_line=65536, max_literal=1 << 20)
    conn.receive_data(b"t SEARCH " + text + b"\r\n")
    ev = conn.next_event()
    assert isinstance(ev, Command)
    cmd = parse_command(ev)
    assert isinstance(cmd, c.Search)
    return cmd.criteria


def _one_by_one(sel: Selected, criteria: c.SearchAnd) -> list[int]:
    """The oracle: every message through ``Matcher.match`` (dates converted one by one, header
    values decoded, nothing pre-filtered)."""
    uids = list(sel.uids)
    rows = sel.mailbox.rows(uids)
    matcher = S.Matcher(sel, None, len(uids), uids[-1])
    return [r[0] for seq, r in enumerate(rows, start=1)
            if matcher.match(criteria, S._Candidate(sel, r, seq, {}, []))]


LEAVES = ["SEEN", "UNSEEN", "FLAGGED", "DELETED", "ANSWERED", "KEYWORD $WORK", "UNKEYWORD $work",
          "KEYWORD junk", "NEW", "OLD", "RECENT", "BEFORE 10-Feb-2026", "ON 10-Feb-2026",
          "SINCE 10-Feb-2026", "SINCE 11-Feb-2026", "ON 9-Feb-2026", "LARGER 150", "SMALLER 200",
          "1:20", "UID 5:30,60:*", "SENTON 3-Feb-2026", 'FROM "ss"', 'FROM "K"', 'FROM "user17"',
          'FROM "\\"the\\""', 'FROM "straße"', "FROM anna", 'SUBJECT "note 1"', "BODY text",
          'HEADER From ""', "ALL"]


def _tree(rnd: random.Random, depth: int = 0) -> str:
    pick = rnd.random()
    if depth < 3 and pick < 0.15:
        return f"NOT {_tree(rnd, depth + 1)}"
    if depth < 3 and pick < 0.35:
        return f"OR {_tree(rnd, depth + 1)} {_tree(rnd, depth + 1)}"
    if depth < 3 and pick < 0.45:
        return "(" + " ".join(_tree(rnd, depth + 1) for _ in range(rnd.randint(1, 3))) + ")"
    return rnd.choice(LEAVES)


@pytest.mark.parametrize("memo", [None, HeaderMemo(), HeaderMemo(max_values=100)],
                         ids=["sqlite", "memo", "memo-evicting"])
def test_setwise_evaluation_equals_one_message_at_a_time(selected: Selected, memo: HeaderMemo | None) -> None:
    """Rules 7-9: with the header values from SQLite's test, from the memory memo, and from a
    memo too small to keep two fields (each search evicts the other's map)."""
    uids = list(selected.uids)
    S._run(selected, uids, _criteria(b'FROM "x" SUBJECT "x"'), None)  # fills the header cache
    rnd = random.Random(7)
    seen_hits = 0
    for _ in range(300):
        text = " ".join(_tree(rnd) for _ in range(rnd.randint(1, 3)))
        criteria = _criteria(text.encode())
        got = [uid for uid, _ in S._run(selected, uids, criteria, None, memo)]
        assert got == _one_by_one(selected, criteria), text
        seen_hits += bool(got)
    assert seen_hits > 100  # the trees are not all empty answers


def test_header_prefilter_keeps_case_folded_matches(selected: Selected) -> None:
    """Rule 8: "ß" folds to "ss" and KELVIN SIGN to "k": their JSON is \\u-escaped, so the
    pre-filter must not rule them out."""
    uids = list(selected.uids)
    rows = {r[0]: r for r in selected.mailbox.rows(uids)}
    memo = HeaderMemo()
    for n in range(4):  # from the files, the index cache, then twice through the memo
        ss = {u for u, _ in S._run(selected, uids, _criteria(b'FROM "ss"'), None, memo if n > 1 else None)}
        kelvin = {u for u, _ in S._run(selected, uids, _criteria(b'FROM "k"'), None, memo if n > 1 else None)}
        assert ss and kelvin
        for uid in rows:
            header = selected.mailbox.read_header(uid)
            assert (uid in ss) == (b"Stra" in header)
            assert (uid in kelvin) == (b"=E2=84=AA" in header)


def test_internaldate_day_bounds(selected: Selected) -> None:
    """Rule 7: ON/SINCE/BEFORE against the local day's first instant, as the calendar date of
    each INTERNALDATE would say."""
    uids = list(selected.uids)
    rows = selected.mailbox.rows(uids)
    day = dt.date(2026, 2, 10)
    for op, test in (("ON", lambda d: d == day), ("BEFORE", lambda d: d < day), ("SINCE", lambda d: d >= day)):
        got = [u for u, _ in S._run(selected, uids, _criteria(f"{op} 10-Feb-2026".encode()), None)]
        want = [r[0] for r in rows if test(dt.datetime.fromtimestamp(r[3]).date())]
        assert got == want and want, op
    assert S.cost(_criteria(b"UNSEEN SINCE 1-Feb-2026 KEYWORD $Work")) == S._META


def test_header_memo_is_bounded_and_drops_expunged_messages(selected: Selected) -> None:
    """headermemo rules 1, 3: maps beyond the limit are dropped (least recently used first),
    a folder over the limit is not kept, and a map forgets UIDs no longer in the folder."""
    uids = list(selected.uids)
    for field in (b"FROM", b"SUBJECT", b"TO"):  # fills the header cache
        S._run(selected, uids, _criteria(field + b' "x"'), None)
    memo = HeaderMemo(max_values=2 * len(uids))
    box = selected.mailbox
    assert len(memo.values(box, uids, S.HEADER_CACHE + "from") or {}) == len(uids)
    assert len(memo.values(box, uids, S.HEADER_CACHE + "to") or {}) == len(uids)
    memo.values(box, uids, S.HEADER_CACHE + "subject")  # evicts "from", the oldest
    assert [k[2] for k in memo._maps] == [S.HEADER_CACHE + "to", S.HEADER_CACHE + "subject"]
    assert HeaderMemo(max_values=len(uids) - 1).values(box, uids, S.HEADER_CACHE + "from") is None
    kept = memo.values(box, uids, S.HEADER_CACHE + "to")
    assert kept is not None
    kept.update({10_000 + n: b'["gone"]' for n in range(2 * len(uids) + 64)})  # expunged since
    fresh = memo.values(box, [*uids[:-1], 999_999], S.HEADER_CACHE + "to")  # 999999: not cached, read
    assert fresh is not None and set(fresh) == set(uids[:-1])


def test_header_memo_rulings_follow_new_messages(selected: Selected) -> None:
    """headermemo rule 6: a needle's ruling, kept, then extended by the values added since,
    equals one made from scratch; the kept one is reused as long as the map is the same."""
    uids = list(selected.uids)
    S._run(selected, uids, _criteria(b'FROM "x"'), None)  # fills the header cache
    key = S.HEADER_CACHE + "from"
    memo = HeaderMemo()
    first = memo.rule_out(selected.mailbox, uids[:40], key, b"user17")
    again = memo.rule_out(selected.mailbox, uids[:40], key, b"user17")
    assert first is not None and again is not None and first[0] is again[0]  # reused
    grown = memo.rule_out(selected.mailbox, uids, key, b"user17")
    scratch = HeaderMemo().rule_out(selected.mailbox, uids, key, b"user17")
    assert grown is not None and scratch is not None
    assert grown == scratch and scratch[1]  # some may match
    assert set(scratch[0]) | set(scratch[1]) == set(uids)
