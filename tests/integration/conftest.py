from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server

MakeServer = Callable[..., Server]


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


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running pigeon per test module (alice@, bob@, carol@example.test), default limits.

    Tests using it must not depend on mailbox counts left by other tests: each uses its own
    recipient or a unique token in the Subject.
    """
    srv = Server(tmp_path_factory.mktemp("shared"))
    for user in ("alice", "bob", "carol"):
        srv.add_user(f"{user}@example.test")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[MakeServer]:
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


@pytest.fixture
def swaks() -> str:
    path = shutil.which("swaks")
    if path is None:
        pytest.fail("swaks is not installed (`make test` installs it; or apt-get install swaks)")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration starts the real server: mark it (``-m "not integration"``)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)
