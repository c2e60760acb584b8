"""pigeon.auth.passwords: argon2id hashing, verification, rehash, generation."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from pigeon.auth.passwords import (
    GENERATED_LENGTH,
    MAX_PASSWORD_BYTES,
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from pigeon.directory import Directory


def test_hash_is_argon2id_and_salted() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$") and first != second
    assert verify_password(first, "correct horse") and verify_password(second, "correct horse")
    assert not verify_password(first, "correct horsE")
    assert not needs_rehash(first)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")
    with pytest.raises(ValueError, match="longer than"):
        hash_password("x" * (MAX_PASSWORD_BYTES + 1))
    assert not verify_password(hash_password("pw"), "")
    assert not verify_password(hash_password("pw"), "x" * (MAX_PASSWORD_BYTES + 1))


def test_corrupt_hash_is_false_and_logged_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert verify_password("not-a-hash", "hunter2") is False
        assert needs_rehash("not-a-hash") is True
    assert "cannot" in caplog.text and "hunter2" not in caplog.text


def test_old_parameters_need_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
    assert verify_password(weak, "pw")
    assert needs_rehash(weak)


def test_directory_upgrades_an_old_hash_on_login(tmp_path: Path) -> None:
    db = tmp_path / "directory.sqlite3"
    with Directory(db, ["example.test"], None) as d:
        d.add_user("bob@example.test", "pw")
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
        conn = sqlite3.connect(db)
        with conn:
            conn.execute("UPDATE users SET password_hash = ?", (weak,))
        assert d.verify_password("bob@example.test", "pw")
        (stored,) = conn.execute("SELECT password_hash FROM users").fetchone()
        conn.close()
        assert stored != weak and not needs_rehash(stored)
        assert d.verify_password("bob@example.test", "pw")


def test_generate_password() -> None:
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    for pw in passwords:
        assert len(pw) == GENERATED_LENGTH and pw.isalnum()
        assert not set(pw) & set("0O1lI")
    assert len(generate_password(24)) == 24
    with pytest.raises(ValueError):
        generate_password(4)
