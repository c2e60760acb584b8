"""The per-account index shared by several processes (``[imap] processes``, issue 18): UIDs
and MODSEQs are handed out once, whichever process writes (ops Rule 1, index Rule 1)."""

from __future__ import annotations

import fcntl
import os
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

from pigeon.clocks import SystemClock
from pigeon.store.mailbox import MailStore
from tests.unit.store.mailbox.conftest import BOB, MSG

PROCESSES = 3
EACH = 40

WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from pigeon.clocks import SystemClock
from pigeon.core.address import Address
from pigeon.store.mailbox import MailStore
store = MailStore(Path(sys.argv[1]), "mx.example.com", SystemClock())
account = store.account(Address("bob", "example.com"))
view = account.select("INBOX")
for i in range(int(sys.argv[3])):
    account.append("INBOX", b"Subject: p%s-%d\r\n\r\nbody\r\n" % (sys.argv[4].encode(), i), frozenset(), None)
    view.sync()
    uids = list(view.uids())
    changed, _ = view.store(uids[-3:], "add", frozenset({"\\Flagged", "$P" + sys.argv[4]}))
    if changed:
        print(changed[0].modseq)  # one MODSEQ per operation (ops Rule 1)
view.close()
store.close()
"""


def test_appends_and_stores_from_several_processes_never_share_a_uid_or_modseq(tmp_path: Path) -> None:
    src = str(Path(__file__).resolve().parents[4] / "src")
    root = tmp_path / "mail"
    store = MailStore(root, "mx.example.com", SystemClock())
    store.account(BOB).append("INBOX", MSG, frozenset(), None)  # the folder and its index exist
    store.close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), src, str(EACH), str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(PROCESSES)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, [err for _, err in outs]
    stored = [int(x) for out, _ in outs for x in out.split()]
    index = next(root.rglob("pigeon-index.sqlite3"))
    with sqlite3.connect(index) as conn:
        uids = [u for (u,) in conn.execute("SELECT uid FROM message")]
        modseqs = [m for (m,) in conn.execute("SELECT modseq FROM message")]
        (uidnext, highest), = conn.execute("SELECT uidnext, highestmodseq FROM folder WHERE name='INBOX'")
    total = 1 + PROCESSES * EACH
    assert sorted(uids) == list(range(1, total + 1))  # RFC 3501 §2.3.1.1: each UID once, ascending
    assert uidnext == total + 1
    assert len(stored) >= PROCESSES * EACH // 2
    assert len(set(stored)) == len(stored), sorted(stored)  # every STORE its own MODSEQ (RFC 7162 §3.1.1)
    assert highest == max(modseqs) >= max(stored)
    files = list((index.parent / "cur").iterdir())
    assert len(files) == total


APPENDER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from pigeon.clocks import SystemClock
from pigeon.core.address import Address
from pigeon.store.mailbox import MailStore
store = MailStore(Path(sys.argv[1]), "mx.example.com", SystemClock())
account = store.account(Address("bob", "example.com"))
print("opened", flush=True)
print(account.append("INBOX", b"Subject: queued\r\n\r\nbody\r\n", frozenset(), None)[1], flush=True)
store.close()
"""


def test_writers_of_other_processes_queue_on_the_index_lock_file(tmp_path: Path) -> None:
    """index Rule 8: a writer waits on ``pigeon-index.lock`` (held here, by another process)
    and goes on as soon as it is released."""
    src = str(Path(__file__).resolve().parents[4] / "src")
    root = tmp_path / "mail"
    store = MailStore(root, "mx.example.com", SystemClock())
    store.account(BOB).append("INBOX", MSG, frozenset(), None)
    store.close()
    lock = next(root.rglob("pigeon-index.lock"))
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(root), src],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "opened"
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        assert not ready and proc.poll() is None  # its APPEND waits for the lock
        fcntl.lockf(fd, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, err
    assert out.strip() == "2"
