"""``pop3d.locks``: one POP3 session per maildrop, across processes (``[pop3] processes``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pigeon.pop3d import MaildropLocks

HOLD = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from pigeon.pop3d import MaildropLocks
locks = MaildropLocks(Path(sys.argv[1]))
print("held" if locks.acquire("bob@example.test") else "refused", flush=True)
sys.stdin.read()
"""


def test_the_lock_holds_across_processes_and_ends_with_its_holder(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[3] / "src")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), src], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        here = MaildropLocks(tmp_path)
        assert not here.acquire("bob@example.test")  # RFC 1939 §8: the other process holds it
        assert here.acquire("alice@example.test")  # another maildrop is free
    finally:
        holder.kill()  # its end (even killed) releases the lock: the kernel drops the flock
        holder.communicate(timeout=10)
    assert here.acquire("bob@example.test")
    assert here.held("bob@example.test")
    here.release("bob@example.test")
    here.release("bob@example.test")  # a no-op (rule 3)
    assert MaildropLocks(tmp_path).acquire("bob@example.test")
    assert [p.name for p in tmp_path.iterdir() if "bob" in p.name] == []  # the name is hashed


def test_without_a_directory_the_lock_is_in_process() -> None:
    locks = MaildropLocks()
    assert locks.acquire("bob@example.test")
    assert not locks.acquire("bob@example.test")
    locks.release("bob@example.test")
    assert locks.acquire("bob@example.test")
