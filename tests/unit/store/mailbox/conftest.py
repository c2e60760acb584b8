"""Fixtures for the mailbox store contract tests (real files under tmp_path, a fake clock)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.clocks import FakeClock
from pigeon.core.address import Address
from pigeon.store.mailbox import Account, MailStore

BOB = Address("bob", "example.com")
MSG = b"From: a@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[MailStore]:
    s = MailStore(tmp_path / "mail", "mx.example.com", clock)
    yield s
    s.close()


@pytest.fixture
def account(store: MailStore) -> Account:
    return store.account(BOB)


@pytest.fixture
def maildir(tmp_path: Path, account: Account) -> Path:
    return tmp_path / "mail" / "example.com" / "bob"
