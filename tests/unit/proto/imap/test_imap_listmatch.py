"""LIST pattern matching (``listmatch``): the old regular-expression semantics, in linear time,
and the parser's caps on LIST patterns."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigeon.proto.imap.commands import List
from pigeon.proto.imap.errors import ParseError
from pigeon.proto.imap.listmatch import ListMatcher
from pigeon.proto.imap.parse_mailbox import MAX_LIST_PATTERN, MAX_LIST_PATTERNS
from tests.unit.proto.imap.imap_harness import parse


def regex_matcher(pattern: str) -> Callable[[str], bool]:
    """The matcher ``imapd.mailboxes`` used before (a backtracking regex), kept as the oracle."""
    rx = "".join(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch) for ch in pattern)
    compiled = re.compile(rx, re.DOTALL)
    folded = re.compile(rx, re.DOTALL | re.IGNORECASE)

    def match(name: str) -> bool:
        if compiled.fullmatch(name):
            return True
        if name == "INBOX" or name.startswith("INBOX/"):
            return bool(folded.fullmatch(name)) and pattern[:5].upper() == "INBOX"
        return False

    return match


NAMES = ["INBOX", "INBOX/Sub", "INBOX/sub/deep", "Sent", "Sent/2024", "Archive", "Archive/2024/Q1",
         "inboxes", "Entwürfe", "a%b", "a*b", "x/y/z"]


@pytest.mark.parametrize("pattern", [
    "*", "%", "INBOX", "inbox", "InBoX/*", "inbox/%", "INBOX*", "Sent/*", "Sent%", "*/2024", "%/%",
    "%/%/%", "Arch*Q1", "*2024*", "a%b", "a*b", "Entw%", "x/%/z", "", "*%", "%*", "**", "%%", "in*",
])
def test_same_answers_as_the_regex_on_ordinary_patterns(pattern: str) -> None:
    match, oracle = ListMatcher([pattern]), regex_matcher(pattern)
    assert [n for n in NAMES if match(n)] == [n for n in NAMES if oracle(n)]


def test_inbox_is_case_insensitive_only_for_inbox_patterns() -> None:
    match = ListMatcher(["inbox/SUB"])
    assert match("INBOX/Sub") and match("INBOX/SUB") and not match("INBOX/Subx")
    assert not ListMatcher(["*/sub"])("INBOX/Sub")  # not a pattern starting with INBOX
    assert not ListMatcher(["sent"])("Sent")  # other names compare exactly


def test_percent_stops_at_the_separator_and_several_patterns_are_or_ed() -> None:
    match = ListMatcher(["Sent/%", "Arch%"])
    assert match("Sent/2024") and match("Archive")
    assert not match("Sent/2024/Q1") and not match("Archive/2024") and not match("INBOX")


def test_prefixes_report_each_parent_in_one_pass() -> None:
    assert ListMatcher(["%"]).prefixes("a/b/c") == [True, False, False]
    assert ListMatcher(["*"]).prefixes("a/b/c") == [True, True, True]
    assert ListMatcher(["a/%"]).prefixes("a/b/c") == [False, True, False]
    assert ListMatcher(["x"]).prefixes("a/b") == [False, False]


def test_a_pattern_longer_than_any_name_is_dropped() -> None:
    assert not ListMatcher(["abcdef"], longest=5)("abcdef")  # the caller promised names of ≤ 5
    assert ListMatcher(["*a*"], longest=5)("xax")


_ALPHABET = "aAbB/*%iInNoOxX"


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.text(alphabet=_ALPHABET, max_size=9), min_size=1, max_size=3),
    st.text(alphabet=_ALPHABET.replace("*", "").replace("%", ""), min_size=1, max_size=12),
    st.booleans(),
    st.booleans(),
)
def test_equivalent_to_the_regex(patterns: list[str], name: str, inbox_name: bool, inbox_pattern: bool) -> None:
    if inbox_name:
        name = "INBOX/" + name
    if inbox_pattern:
        patterns = ["iNbOx" + patterns[0], *patterns[1:]]
    assert ListMatcher(patterns)(name) == any(regex_matcher(p)(name) for p in patterns)
    parts = name.split("/")
    parents = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    assert ListMatcher(patterns).prefixes(name) == [any(regex_matcher(p)(q) for p in patterns) for q in parents]


HOSTILE = [
    ("*" * 30 + "x", 0),  # 22 s of backtracking per LIST with the regex
    ("*%" * 300, 2000),  # never returned
    ("*a" * 250 + "%b", 0),  # keeps every state alive on a name of a's: the worst case left
    ("*a" * 250 + "%", 2000),
    (("%a" * 512)[:MAX_LIST_PATTERN], 0),  # more literals than any name: dropped
]


@pytest.mark.parametrize(("pattern", "hits"), HOSTILE, ids=["30-stars", "star-percent", "alive", "alive-hit", "long"])
def test_hostile_patterns_finish_fast(pattern: str, hits: int) -> None:
    # the largest account: 1000 folders and 1000 subscriptions, names of 255 octets
    names = ["a" * 254 + str(i % 10) for i in range(1000)] + ["a" * 255] * 1000
    start = time.process_time()
    match = ListMatcher([pattern] * MAX_LIST_PATTERNS, longest=255)
    assert sum(1 for n in names if match(n)) == hits
    # the worst case ("alive") takes 0.5-1 s of CPU; the regex took minutes to forever
    assert time.process_time() - start < 5.0


def test_cost_grows_linearly_with_the_name() -> None:
    match = ListMatcher(["*a" * 100 + "%b"])

    def cost(n: int) -> float:
        runs = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(20):
                match("a" * n)
            runs.append(time.process_time() - start)
        return min(runs)

    cost(100)  # warm up
    assert cost(1600) < 40 * cost(100)  # 16× longer: linear is ~16×, exponential far more


def test_list_pattern_caps_in_the_parser() -> None:
    ok = "%" * MAX_LIST_PATTERN
    cmd = parse(f'a LIST "" "{ok}"'.encode())
    assert isinstance(cmd, List) and cmd.patterns == (ok,)
    with pytest.raises(ParseError, match="pattern longer than 1024"):
        parse(f'a LIST "" "{ok}x"'.encode())
    with pytest.raises(ParseError, match="pattern longer than 1024"):
        parse(f'a LSUB "" {ok}*'.encode())
    with pytest.raises(ParseError, match="reference longer than 1024"):
        parse(f'a LIST "{"r" * (MAX_LIST_PATTERN + 1)}" "*"'.encode())
    many = " ".join(["x"] * MAX_LIST_PATTERNS)
    cmd = parse(f'a LIST "" ({many})'.encode())
    assert isinstance(cmd, List) and len(cmd.patterns) == MAX_LIST_PATTERNS
    with pytest.raises(ParseError, match="more than 16 mailbox patterns"):
        parse(f'a LIST "" ({many} y)'.encode())
