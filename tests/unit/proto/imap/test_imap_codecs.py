"""Sequence sets, modified UTF-7 and dates."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pigeon.proto.imap import mutf7
from pigeon.proto.imap.dates import format_internaldate, parse_date, parse_datetime
from pigeon.proto.imap.errors import MUtf7Error, SeqSetError
from pigeon.proto.imap.seqset import STAR, SeqSet, compact, from_numbers, parse_seqset


def test_parse_seqset_forms() -> None:
    assert parse_seqset("1:*,5,9:7") == SeqSet(((1, STAR), (5, 5), (7, 9)))
    assert parse_seqset("*") == SeqSet(((STAR, STAR),))
    assert parse_seqset("$") == SeqSet(saved=True)
    assert str(parse_seqset("1:*,5,9:7")) == "1:*,5,7:9"
    assert str(SeqSet(saved=True)) == "$"
    assert parse_seqset("1:*").has_star and not parse_seqset("1:2").has_star


@pytest.mark.parametrize("text", ["", "0", "1:0", "a", "1,", ",1", "1::2", "4294967296", "99999999999", "1:2:3", "$,1", "-1", "١"])
def test_parse_seqset_errors(text: str) -> None:
    with pytest.raises(SeqSetError):
        parse_seqset(text)


def test_seqset_options() -> None:
    with pytest.raises(SeqSetError):
        parse_seqset("$", allow_saved=False)
    with pytest.raises(SeqSetError):
        parse_seqset("1:*", allow_star=False)
    assert parse_seqset("4294967295") == SeqSet(((4294967295, 4294967295),))


def test_resolve_sequence_numbers() -> None:
    assert parse_seqset("2:*").resolve_seq(5) == [2, 3, 4, 5]
    assert parse_seqset("*:4").resolve_seq(5) == [4, 5]
    assert parse_seqset("1,3,2:3,1").resolve_seq(5) == [1, 2, 3]
    assert parse_seqset("*").resolve_seq(1) == [1]
    with pytest.raises(SeqSetError):
        parse_seqset("6").resolve_seq(5)
    with pytest.raises(SeqSetError):
        parse_seqset("1:*").resolve_seq(0)
    with pytest.raises(SeqSetError):
        SeqSet(saved=True).resolve_seq(3)


def test_resolve_uids() -> None:
    uids = [3, 5, 9, 10, 42]
    assert parse_seqset("1:9").resolve_uids(uids) == [3, 5, 9]
    assert parse_seqset("*").resolve_uids(uids) == [42]
    assert parse_seqset("100:*").resolve_uids(uids) == [42]  # RFC 3501 §6.4.8
    assert parse_seqset("4,6:8").resolve_uids(uids) == []
    assert parse_seqset("1:*").resolve_uids([]) == []
    assert parse_seqset("10,3:5,9:10").resolve_uids(uids) == [3, 5, 9, 10]
    assert parse_seqset("5").contains(5, 42) and parse_seqset("40:*").contains(42, 42)
    assert not parse_seqset("1:4").contains(5, 42)


def test_huge_ranges_are_not_enumerated() -> None:
    s = parse_seqset(",".join(["1:4294967295"] * 2000))
    assert s.resolve_uids([1, 2, 4000000000]) == [1, 2, 4000000000]
    assert len(parse_seqset("1:*," * 1000 + "1").resolve_seq(100000)) == 100000


def test_compact() -> None:
    assert compact([3, 1, 2, 7]) == "1:3,7"
    assert compact([]) == ""
    assert compact([5]) == "5"
    assert compact([1, 1, 2, 4, 5, 6, 9]) == "1:2,4:6,9"
    assert from_numbers([1, 2, 3, 10]) == SeqSet(((1, 3), (10, 10)))
    assert from_numbers([]) == SeqSet()


@given(st.sets(st.integers(min_value=1, max_value=500)))
def test_compact_round_trip(nums: set[int]) -> None:
    text = compact(nums)
    if not nums:
        assert text == ""
        return
    assert parse_seqset(text).resolve_uids(sorted(nums)) == sorted(nums)
    assert parse_seqset(text).resolve_uids(list(range(1, 501))) == sorted(nums)


@pytest.mark.parametrize(
    ("utf8", "wire"),
    [
        ("INBOX", "INBOX"),
        ("&", "&-"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("éé", "&AOkA6Q-"),
        ("😀", "&2D3eAA-"),
        ("", ""),
    ],
)
def test_mutf7_known_values(utf8: str, wire: str) -> None:
    assert mutf7.encode(utf8) == wire
    assert mutf7.decode(wire) == utf8
    assert mutf7.needs_encoding(utf8) == (utf8 != wire)


@pytest.mark.parametrize(
    "wire",
    [
        "&",  # not closed
        "&AOk",  # not closed
        "&AGE-",  # encodes printable "a"
        "&AOk-&AOk-",  # adjacent runs must be merged
        "&AOl-",  # non-zero padding bits
        "&2D0-",  # lone surrogate
        "&A-",  # truncated
        "&AO/-",  # "/" is not modified BASE64
        "&AOk=-",  # padding not allowed
        "caf\u00e9",  # raw 8-bit
        "a\tb",  # control
        "&AA-",  # odd octet count
    ],
)
def test_mutf7_strict_errors(wire: str) -> None:
    with pytest.raises(MUtf7Error):
        mutf7.decode(wire)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_mutf7_round_trip(name: str) -> None:
    wire = mutf7.encode(name)
    assert wire.isascii()
    assert mutf7.decode(wire) == name


def test_dates() -> None:
    assert parse_date("1-Feb-1994") == dt.date(1994, 2, 1)
    assert parse_date("01-feb-1994") == dt.date(1994, 2, 1)
    for bad in ("1-Foo-1994", "1-Feb-94", "32-Jan-2000", "29-Feb-2001", "1 Feb 1994", "1-Feb-1994x"):
        with pytest.raises(ValueError):
            parse_date(bad)
    d = parse_datetime(" 7-Jul-1996 02:44:25 +0130")
    assert d == dt.datetime(1996, 7, 7, 1, 14, 25, tzinfo=dt.timezone.utc)
    for bad in ("7-Jul-1996 02:44:25 +0000", "07-Jul-1996 2:44:25 +0000", "07-Jul-1996 02:44:25 +0060", "07-Jul-1996 25:00:00 +0000"):
        with pytest.raises(ValueError):
            parse_datetime(bad)


def test_format_internaldate() -> None:
    ts = dt.datetime(1996, 7, 17, 9, 44, 25, tzinfo=dt.timezone.utc).timestamp()
    assert format_internaldate(ts, -420) == '"17-Jul-1996 02:44:25 -0700"'
    assert format_internaldate(ts) == '"17-Jul-1996 09:44:25 +0000"'
    assert format_internaldate(dt.datetime(2001, 1, 2, 3, 4, 5)) == '"02-Jan-2001 03:04:05 +0000"'
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert format_internaldate(dt.datetime(2001, 1, 2, 3, 4, 5, tzinfo=tz)) == '"02-Jan-2001 03:04:05 +0530"'
    assert parse_datetime(format_internaldate(ts, -420).strip('"')).timestamp() == ts
