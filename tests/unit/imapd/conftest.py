"""The fixtures every imapd test file uses: a mail store in a tmp dir and a real IMAP server
thread on loopback over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.clocks import SystemClock
from pigeon.store.mailbox import MailStore
from tests.unit.imapd.helpers import ServerThread


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MailStore]:
    s = MailStore(tmp_path / "mail", "imap.example.test", SystemClock())
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server(store: MailStore, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(store, tmp_path) as srv:
        yield srv
