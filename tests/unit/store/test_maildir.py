"""The Maildir store on real files (pigeon.store.maildir)."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import re
import stat
import threading
import tracemalloc
from pathlib import Path

import pytest

from pigeon.core.address import Address, parse_address
from pigeon.durable.testing import FaultyIO
from pigeon.store.lineends import CHUNK_SIZE, CrlfToLf
from pigeon.store.maildir import MaildirStore
from pigeon.store.names import parse_sizes

BOB = Address("bob", "example.com")
NAME_RE = re.compile(r"^\d+\.M\d+P\d+Q\d+\.mx\.example\.com,S=(\d+),W=(\d+)$")


@pytest.fixture
def fio() -> FaultyIO:
    """The store's IO seam: tests set faults on it."""
    return FaultyIO()


@pytest.fixture
def store(tmp_path: Path, fio: FaultyIO) -> MaildirStore:
    return MaildirStore(tmp_path / "mail", "mx.example.com", io=fio)


def _only_file(directory: Path) -> Path:
    files = list(directory.iterdir())
    assert len(files) == 1, files
    return files[0]


# -- layout --------------------------------------------------------------------------------------


def test_ensure_creates_private_maildir(store: MaildirStore) -> None:
    maildir = store.ensure(BOB)
    assert maildir == store.root / "example.com" / "bob"
    for sub in ("cur", "new", "tmp"):
        mode = (maildir / sub).stat().st_mode
        assert stat.S_ISDIR(mode)
        assert stat.S_IMODE(mode) & 0o077 == 0
    assert store.ensure(BOB) == maildir  # idempotent
    assert store.list_new(BOB) == [] and store.list_cur(BOB) == []


def test_folded_addresses_share_one_maildir(store: MaildirStore) -> None:
    assert store.user_root(parse_address("Bob@EXAMPLE.COM")) == store.user_root(BOB)


def test_ensure_refuses_a_file_where_a_directory_belongs(store: MaildirStore) -> None:
    store.root.mkdir(parents=True)
    (store.root / "example.com").write_bytes(b"not a dir")
    with pytest.raises(OSError):
        store.ensure(BOB)


@pytest.mark.parametrize(
    "local",
    ["../x", "..", ".", ".hidden", "a/b", "../../../../etc/passwd", '"a b"', '"../.."', "jürgen",
     '"x\\"y"', "%2E%2E", "a\x00b"],
)
def test_nasty_local_parts_stay_under_the_root(store: MaildirStore, local: str) -> None:
    for domain in ("example.com", "..", "../..", "[IPv6:::1]", "a/b"):
        address = Address(local, domain)
        maildir = store.ensure(address)
        root = store.root.resolve()
        assert maildir.resolve().parent.parent == root
        assert maildir.parent.name != "." and not maildir.name.startswith(".")
        path = store.deliver(address, b"", io.BytesIO(b"x\r\n"))
        assert path.resolve().is_relative_to(root)
        assert store.list_new(address) == [path]
    # Nothing was created anywhere but under the root.
    assert sorted(p.name for p in store.root.parent.iterdir()) == ["mail"]


# -- delivery ------------------------------------------------------------------------------------


def test_deliver_writes_headers_then_body_with_lf_line_ends(store: MaildirStore) -> None:
    store.ensure(BOB)
    body = b"Subject: hi\r\n\r\nline 1\r\nbare\rcr and bare\nlf\r\n\x00\xff 8bit\r\n"
    path = store.deliver(BOB, b"Return-Path: <a@b.c>\r\n", io.BytesIO(body))
    expected = b"Return-Path: <a@b.c>\nSubject: hi\n\nline 1\nbare\rcr and bare\nlf\n\x00\xff 8bit\n"
    assert path.read_bytes() == expected
    assert path.parent == store.user_root(BOB) / "new"
    m = NAME_RE.match(path.name)
    assert m, path.name
    assert int(m.group(1)) == len(expected) == path.stat().st_size
    assert int(m.group(2)) == len(expected) + expected.count(b"\n")
    assert parse_sizes(path.name) == (int(m.group(1)), int(m.group(2)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list((store.user_root(BOB) / "tmp").iterdir()) == []
    assert store.list_new(BOB) == [path]


def test_w_size_equals_the_crlf_original(store: MaildirStore) -> None:
    store.ensure(BOB)
    body = b"a\r\n" * 1000 + b"end\r\n"
    path = store.deliver(BOB, b"X: y\r\n", io.BytesIO(body))
    assert parse_sizes(path.name) == (len(body) - 1001 + 6 - 1, len(body) + 6)


def test_cr_at_a_chunk_boundary(store: MaildirStore) -> None:
    store.ensure(BOB)
    # The CR of a CRLF is the last byte of the first 64 KiB chunk; a lone CR ends the message.
    body = b"x" * (CHUNK_SIZE - 1) + b"\r\n" + b"y" * CHUNK_SIZE + b"\r" + b"\r\n" + b"z\r"
    path = store.deliver(BOB, b"", io.BytesIO(body))
    assert path.read_bytes() == body.replace(b"\r\n", b"\n")


def test_converter_ignores_where_chunks_are_cut() -> None:
    data = b"a\r\nb\r\r\n\rc\n\r\r\nd\r"
    for cut in range(len(data) + 1):
        conv = CrlfToLf()
        out = conv.feed(data[:cut]) + conv.feed(data[cut:]) + conv.finish()
        assert out == data.replace(b"\r\n", b"\n")
        assert conv.size == len(out)
        assert conv.crlf_size == len(out) + out.count(b"\n")


def test_deliver_without_ensure_fails_cleanly(store: MaildirStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.deliver(BOB, b"", io.BytesIO(b"x\r\n"))
    assert store.list_new(BOB) == []


def test_write_error_leaves_nothing_behind(store: MaildirStore, fio: FaultyIO) -> None:
    maildir = store.ensure(BOB)
    fio.fail("fsync", error=errno.ENOSPC)
    with pytest.raises(OSError) as info:
        store.deliver(BOB, b"", io.BytesIO(b"x\r\n"))
    assert info.value.errno == errno.ENOSPC
    assert list((maildir / "tmp").iterdir()) == []
    assert list((maildir / "new").iterdir()) == []


def test_directory_fsync_error_withdraws_the_message(store: MaildirStore, fio: FaultyIO) -> None:
    maildir = store.ensure(BOB)
    fio.fail("fsync_dir", match="/new", error=errno.EIO, times=None)
    with pytest.raises(OSError):
        store.deliver(BOB, b"", io.BytesIO(b"x\r\n"))
    with pytest.raises(OSError):
        asyncio.run(store.deliver_async(BOB, b"", io.BytesIO(b"x\r\n")))
    assert list((maildir / "new").iterdir()) == []
    assert list((maildir / "tmp").iterdir()) == []


def test_rename_fallback_without_hard_links(store: MaildirStore, fio: FaultyIO,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    maildir = store.ensure(BOB)
    monkeypatch.setattr(fio, "rename_noreplace", lambda src, dst: False)  # no renameat2 here
    fio.fail("link", error=errno.EPERM)  # and no hard links
    path = store.deliver(BOB, b"", io.BytesIO(b"hello\r\n"))
    assert path.read_bytes() == b"hello\n"
    assert list((maildir / "tmp").iterdir()) == []
    assert fio.calls["rename"] == 1


def test_name_clash_in_new_picks_another_name(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    maildir = store.ensure(BOB)
    names = iter(["1.M1P1Q1.mx", "1.M1P1Q1.mx", "1.M1P1Q2.mx"])
    monkeypatch.setattr(store._names, "next", lambda: next(names))
    first = store.deliver(BOB, b"", io.BytesIO(b"same\r\n"))
    second = store.deliver(BOB, b"", io.BytesIO(b"same\r\n"))  # same base and size: link refuses
    assert first != second
    assert first.read_bytes() == second.read_bytes() == b"same\n"
    assert second.name.startswith("1.M1P1Q2.mx,")
    assert list((maildir / "tmp").iterdir()) == []


# -- concurrency and group commit ----------------------------------------------------------------


def test_200_concurrent_deliveries_make_200_files(store: MaildirStore) -> None:
    store.ensure(BOB)

    async def main() -> list[Path]:
        return await asyncio.gather(
            *(store.deliver_async(BOB, b"", io.BytesIO(b"msg %d\r\n" % i)) for i in range(200))
        )

    paths = asyncio.run(main())
    assert len(set(paths)) == 200
    assert sorted(paths) == store.list_new(BOB)
    assert sorted(p.read_bytes() for p in paths) == sorted(b"msg %d\n" % i for i in range(200))
    assert list((store.user_root(BOB) / "tmp").iterdir()) == []
    # Group commit: the new/ fsync was shared.
    assert 1 <= store.dir_fsyncs < 200


def test_200_concurrent_blocking_deliveries_from_threads(store: MaildirStore) -> None:
    store.ensure(BOB)
    paths: list[Path] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            p = store.deliver(BOB, b"", io.BytesIO(b"%d-%d\r\n" % (n, i)))
            with lock:
                paths.append(p)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 200 == len(store.list_new(BOB))


# -- memory --------------------------------------------------------------------------------------


class _GeneratedBody(io.RawIOBase):
    """A 20 MB CRLF message produced on the fly, so the test holds none of it in memory."""

    LINE = b"0123456789" * 7 + b"\r\n"

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "memoryview | bytearray") -> int:  # type: ignore[override]
        n = min(len(buffer), self.remaining)
        start = self.position % len(self.LINE)
        data = (self.LINE * (n // len(self.LINE) + 2))[start : start + n]
        buffer[:n] = data
        self.remaining -= n
        self.position += n
        return n


def test_large_message_streams_in_bounded_memory(store: MaildirStore) -> None:
    store.ensure(BOB)
    size = 20 * 1024 * 1024
    line = _GeneratedBody.LINE
    assert size % len(line) != 0  # the last line is cut: fine, it only checks the copy
    body = io.BufferedReader(_GeneratedBody(size), buffer_size=CHUNK_SIZE)
    tracemalloc.start()
    try:
        path = store.deliver(BOB, b"Delivered-To: bob@example.com\r\n", body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        body.close()
    assert peak < 2 * 1024 * 1024, peak
    full_lines, tail = divmod(size, len(line))
    expected_size = len(b"Delivered-To: bob@example.com\n") + full_lines * (len(line) - 1) + tail
    assert path.stat().st_size == expected_size
    assert parse_sizes(path.name) == (expected_size, expected_size + full_lines + 1)
    with path.open("rb") as f:
        assert f.readline() == b"Delivered-To: bob@example.com\n"
        assert f.readline() == line.replace(b"\r\n", b"\n")


def test_deliveries_from_threads_share_the_new_directory_fsync(store: MaildirStore, fio: FaultyIO) -> None:
    """Rule 5: threads delivering at once into one Maildir share ``new/``'s fsync (the engine's
    worker-thread door, tested in tests/unit/durable/test_commit.py)."""
    store.ensure(BOB)
    before = fio.calls["fsync_dir"]

    def worker(n: int) -> None:
        for i in range(10):
            store.deliver_shared(BOB, b"", io.BytesIO(b"%d-%d\r\n" % (n, i)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list_new(BOB)) == 100
    assert 1 <= fio.calls["fsync_dir"] - before == store.dir_fsyncs <= 100


def test_ensure_is_remembered(store: MaildirStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.ensure(BOB)
    monkeypatch.setattr(os.path, "isdir", lambda p: pytest.fail("ensure looked again"))
    assert store.ensure(BOB) == store.user_root(BOB)
