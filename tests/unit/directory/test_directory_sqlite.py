"""Directory over a real SQLite file: changes, persistence, visibility across connections."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.core.address import Address, parse_address
from pigeon.directory import Directory, DirectoryError
from pigeon.directory.schema import SCHEMA_VERSION


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "directory.sqlite3"


@pytest.fixture
def directory(db: Path) -> Iterator[Directory]:
    with Directory(db, ["example.test"], None) as d:
        yield d


def A(text: str) -> Address:
    return parse_address(text)


def test_file_is_private_and_versioned(directory: Directory, db: Path) -> None:
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_newer_schema_is_refused(db: Path) -> None:
    Directory(db, [], None).close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(DirectoryError, match="newer than this Pigeon"):
        Directory(db, [], None)


def test_domains(directory: Directory) -> None:
    directory.add_domain("Example.ORG.")
    assert directory.domains() == ["example.org", "example.test"]
    assert directory.is_local_domain("EXAMPLE.org") and directory.is_local_domain("example.test")
    assert not directory.is_local_domain("example.net")
    with pytest.raises(DirectoryError, match="already a local domain"):
        directory.add_domain("example.org")
    with pytest.raises(DirectoryError, match="in the config file"):
        directory.add_domain("example.test")
    with pytest.raises(DirectoryError, match="remove it there"):
        directory.remove_domain("example.test")
    with pytest.raises(DirectoryError, match="not a valid domain"):
        directory.add_domain("not a domain")
    directory.remove_domain("example.org")
    assert directory.domains() == ["example.test"]
    with pytest.raises(DirectoryError, match="not a domain of the directory"):
        directory.remove_domain("example.org")


def test_users_passwords_and_forward(directory: Directory) -> None:
    directory.add_user("Bob@Example.test", "s3cret pass")
    assert directory.users() == ["bob@example.test"]
    assert directory.user_exists(A("BOB@example.test"))
    assert directory.verify_password("bob@EXAMPLE.test", "s3cret pass")
    assert not directory.verify_password("bob@example.test", "wrong")
    assert not directory.verify_password("nobody@example.test", "s3cret pass")
    assert not directory.verify_password("not an address", "s3cret pass")
    with pytest.raises(DirectoryError, match="already exists"):
        directory.add_user("bob@example.test", "x")
    with pytest.raises(DirectoryError, match="not a local domain"):
        directory.add_user("bob@example.net", "x")
    with pytest.raises(DirectoryError, match="password is empty"):
        directory.add_user("carol@example.test", "")
    with pytest.raises(DirectoryError, match="user 'bad address'"):
        directory.add_user("bad address", "x")

    directory.set_password("bob@example.test", "new one")
    assert directory.verify_password("bob@example.test", "new one")
    assert not directory.verify_password("bob@example.test", "s3cret pass")
    with pytest.raises(DirectoryError, match="no such user"):
        directory.set_password("carol@example.test", "x")

    directory.set_forward("bob@example.test", ["bob@remote.example", "BOB@Remote.Example"], keep=True)
    assert directory.user_forward("bob@example.test") == (["bob@remote.example", "BOB@remote.example"], True)
    assert [str(a) for a in directory.expand(A("bob@example.test"))] == ["bob@example.test", "bob@remote.example"]
    directory.set_forward("bob@example.test", [], keep=True)
    assert directory.user_forward("bob@example.test") == ([], False)
    with pytest.raises(DirectoryError, match="no such user"):
        directory.set_forward("carol@example.test", ["x@y.example"], keep=False)
    with pytest.raises(DirectoryError, match="forward target"):
        directory.set_forward("bob@example.test", ["nonsense"], keep=False)

    directory.remove_user("bob@example.test")
    assert directory.users() == [] and not directory.accepts(A("bob@example.test"))
    with pytest.raises(DirectoryError, match="no such user"):
        directory.remove_user("bob@example.test")


def test_domain_with_users_cannot_be_removed(directory: Directory) -> None:
    directory.add_domain("example.org")
    directory.add_alias("info@example.org", ["x@remote.example"])
    with pytest.raises(DirectoryError, match="0 user\\(s\\) and 1 alias"):
        directory.remove_domain("example.org")


def test_aliases(directory: Directory) -> None:
    directory.add_user("bob@example.test", "pw")
    directory.add_alias("Team@example.test", ["bob@example.test", "x@Remote.Example"])
    directory.add_alias("team@example.test", ["y@remote.example", "bob@example.test"])  # appends, no duplicate
    directory.add_alias("@example.test", ["bob@example.test"])
    assert directory.aliases() == [
        ("@example.test", ["bob@example.test"]),
        ("team@example.test", ["bob@example.test", "x@remote.example", "y@remote.example"]),
    ]
    assert [str(a) for a in directory.expand(A("TEAM@example.test"))] == [
        "bob@example.test", "x@remote.example", "y@remote.example"]
    assert directory.accepts(A("whoever@example.test"))  # catch-all
    directory.remove_alias("team@example.test", "x@remote.example")
    assert directory.aliases()[1] == ("team@example.test", ["bob@example.test", "y@remote.example"])
    directory.remove_alias("@example.test")
    assert not directory.accepts(A("whoever@example.test"))
    with pytest.raises(DirectoryError, match="no such alias"):
        directory.remove_alias("nothing@example.test")
    with pytest.raises(DirectoryError, match="not a local domain"):
        directory.add_alias("a@elsewhere.example", ["bob@example.test"])
    with pytest.raises(DirectoryError, match="at least one target"):
        directory.add_alias("a@example.test", [])
    with pytest.raises(DirectoryError, match="alias target"):
        directory.add_alias("a@example.test", ["|/bin/sh"])


def test_postmaster_address(db: Path) -> None:
    with Directory(db, ["example.test"], None) as d:
        assert d.postmaster_address() is None
        assert d.accepts(A("postmaster@example.test"))  # RFC 5321 §4.5.1, even with no user yet
        d.add_user("first@example.test", "pw")
        d.add_user("second@example.test", "pw")
        assert d.postmaster_address() == Address("first", "example.test")
        assert [str(a) for a in d.expand(A("Postmaster@example.test"))] == ["first@example.test"]
    with Directory(db, ["example.test"], "admin@Example.test") as d:
        assert d.postmaster_address() == Address("admin", "example.test")
        d.set_config_domains(["example.test"], "second@example.test")
        assert d.postmaster_address() == Address("second", "example.test")


def test_persistence_and_visibility_across_connections(db: Path) -> None:
    """The server's Directory sees the CLI's changes at the next lookup (no restart)."""
    with Directory(db, ["example.test"], None) as server, Directory(db, ["example.test"], None) as cli:
        assert not server.accepts(A("new@example.test"))
        cli.add_user("new@example.test", "pw")
        assert server.accepts(A("new@example.test"))
        cli.add_domain("example.org")
        assert server.is_local_domain("example.org")
        cli.add_alias("@example.org", ["new@example.test"])
        assert [str(a) for a in server.expand(A("any@example.org"))] == ["new@example.test"]
        cli.remove_user("new@example.test")
        assert not server.user_exists(A("new@example.test"))
        assert server.verify_password("new@example.test", "pw") is False
    with Directory(db, [], None) as again:
        assert again.domains() == ["example.org"]
        assert again.aliases() == [("@example.org", ["new@example.test"])]


def test_config_reload(directory: Directory) -> None:
    directory.add_user("bob@example.test", "pw")
    directory.set_config_domains(["example.net"], None, recipient_delimiter="-")
    assert directory.domains() == ["example.net"]
    assert not directory.accepts(A("bob@example.test"))


def test_closed_directory_refuses(db: Path) -> None:
    d = Directory(db, [], None)
    d.close()
    d.close()  # idempotent
    with pytest.raises(DirectoryError, match="closed"):
        d.domains()


def test_lookups_from_several_threads(directory: Directory) -> None:
    directory.add_user("bob@example.test", "pw")
    errors: list[BaseException] = []

    def look() -> None:
        try:
            for _ in range(500):
                assert directory.accepts(A("bob+x@example.test"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=look) for _ in range(4)]
    for t in threads:
        t.start()
    directory.add_alias("x@example.test", ["bob@example.test"])
    for t in threads:
        t.join()
    assert errors == []


def test_corrupt_rows_are_logged_and_skipped(directory: Directory, db: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory.add_user("bob@example.test", "pw")
    directory.add_user("eve@example.test", "pw")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE users SET forward = 'not json' WHERE address = 'bob@example.test'")
        conn.execute("UPDATE users SET forward = '[\"no at sign\"]' WHERE address = 'eve@example.test'")
    conn.close()
    assert [str(a) for a in directory.expand(A("bob@example.test"))] == ["bob@example.test"]
    assert [str(a) for a in directory.expand(A("eve@example.test"))] == ["eve@example.test"]
    assert "not valid JSON" in caplog.text and "is invalid" in caplog.text
