from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A running pigeon with users alice@ and bob@example.test."""
    srv = Server(tmp_path)
    srv.add_user("alice@example.test")
    srv.add_user("bob@example.test")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[object]:
    made: list[Server] = []

    def make(name: str = "srv", **kw: object) -> Server:
        d = tmp_path / name
        d.mkdir()
        s = Server(d, **kw)  # type: ignore[arg-type]
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.stop()
