"""aliases(5) parsing and Directory.import_aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from pigeon.core.address import parse_address
from pigeon.directory import AliasEntry, Directory, DirectoryError, parse_aliases

SAMPLE = """\
# system aliases
postmaster: root
root: bob,
    alice@example.org,
\tx@remote.example
   # an indented comment is still a comment

team@example.org: "john smith"@example.org, bob
abuse:bob
"""


def test_parse() -> None:
    entries = parse_aliases(SAMPLE, "aliases")
    assert entries == [
        AliasEntry(2, "postmaster", ("root",)),
        AliasEntry(3, "root", ("bob", "alice@example.org", "x@remote.example")),
        AliasEntry(8, "team@example.org", ('"john smith"@example.org', "bob")),
        AliasEntry(9, "abuse", ("bob",)),
    ]


def test_quoted_commas_and_colons_stay_in_the_local_part() -> None:
    (entry,) = parse_aliases('"a:b"@ex.org: "c,d"@ex.org, e@ex.org\n', "f")
    assert entry.name == '"a:b"@ex.org' and entry.targets == ('"c,d"@ex.org', "e@ex.org")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a: b\nbackup: :include:/etc/mail/list\n", 2, ":include: targets"),
        ("a: b\n\nbackup: b, |/usr/bin/procmail\n", 3, "program (|command) targets"),
        ('a: "|exec /bin/sh"\n', 1, "program (|command) targets"),
        ("a: /var/mail/archive\n", 1, "file (/path) targets"),
        ('a: "/tmp/x"\n', 1, "file (/path) targets"),
        ("  indented: first\n", 1, "continuation line with no entry"),
        ("no colon here\n", 1, "expected 'name: target"),
        ("a: , ,\n", 1, "has no targets"),
    ],
)
def test_parse_errors_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(DirectoryError) as info:
        parse_aliases(text, "/etc/aliases")
    assert str(info.value).startswith(f"/etc/aliases:{line}: ")
    assert problem in str(info.value)


def test_import(tmp_path: Path) -> None:
    with Directory(tmp_path / "d.sqlite3", ["example.org", "example.net"], None) as d:
        d.add_user("bob@example.org", "pw")
        d.add_alias("abuse@example.org", ["old@remote.example"])  # replaced by the import
        count = d.import_aliases(SAMPLE, "aliases")
        # postmaster, root, abuse × 2 domains + team@example.org
        assert count == 7
        listed = dict(d.aliases())
        assert listed["root@example.net"] == ["bob@example.net", "alice@example.org", "x@remote.example"]
        assert listed["team@example.org"] == ['"john smith"@example.org', "bob@example.org"]
        assert listed["abuse@example.org"] == ["bob@example.org"]
        assert listed["postmaster@example.org"] == ["root@example.org"]
        expanded = [str(a) for a in d.expand(parse_address("postmaster@example.org"))]
        assert expanded == ["bob@example.org", "alice@example.org", "x@remote.example"]
        # importing again changes nothing
        assert d.import_aliases(SAMPLE, "aliases") == 7
        assert dict(d.aliases()) == listed


def test_import_is_all_or_nothing(tmp_path: Path) -> None:
    with Directory(tmp_path / "d.sqlite3", ["example.org"], None) as d:
        with pytest.raises(DirectoryError, match=r"^aliases:2: .*not a local domain"):
            d.import_aliases("a: b\nc@elsewhere.example: d\n", "aliases")
        with pytest.raises(DirectoryError, match=r"^aliases:1: target 'bad address@example.org'"):
            d.import_aliases("a: bad address\n", "aliases")
        # aliases(5): "#" starts a comment only as a line's first non-blank character
        with pytest.raises(DirectoryError, match=r"^aliases:1: target 'bob # note@example.org'"):
            d.import_aliases("a: bob # note\n", "aliases")
        assert d.aliases() == []


def test_alias_list_output_round_trips(tmp_path: Path) -> None:
    with Directory(tmp_path / "d.sqlite3", ["example.org"], None) as d:
        d.import_aliases(SAMPLE, "aliases")
        dumped = "".join(f"{name}: {', '.join(targets)}\n" for name, targets in d.aliases())
    with Directory(tmp_path / "e.sqlite3", ["example.org"], None) as e:
        e.import_aliases(dumped, "dump")
        assert "".join(f"{n}: {', '.join(t)}\n" for n, t in e.aliases()) == dumped
