"""A spy on the file-system flush (``store.fssync.FileSystem.flush``) for tests: counts the
flushes, records which descriptor and device each used, and fails chosen ones."""

from __future__ import annotations

import os

import pytest

from pigeon.store import fssync


class FlushSpy:
    """Counts the flushes; fails those whose number is in ``fail`` (1-based; key 0: every one)
    with that errno, without flushing; the others flush for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: dict[int, int] | None = None) -> None:
        self.calls = 0
        self.fds: list[int] = []
        self.devs: list[int] = []
        self.fail = fail or {}
        real = fssync.FileSystem.flush
        spy = self

        def flush(fs: fssync.FileSystem) -> None:
            spy.calls += 1
            spy.fds.append(fs.fd)
            spy.devs.append(fs.dev)
            err = spy.fail.get(spy.calls, spy.fail.get(0))
            if err is not None:
                raise OSError(err, os.strerror(err))
            real(fs)

        monkeypatch.setattr(fssync.FileSystem, "flush", flush)
