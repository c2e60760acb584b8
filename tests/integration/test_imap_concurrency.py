"""IMAP sessions racing on one mailbox, against the real server (issue 18, "Correct under concurrency").

Several imaplib sessions on one INBOX for a bounded time, each changing flags, expunging,
appending and fetching at once. Each checks its own view after every command:
- its sequence-number → UID map follows exactly the EXISTS / EXPUNGE responses it received,
  and matches a ``UID FETCH 1:* (UID)`` of the server;
- flags it stored on a message are reported as stored by the STORE's own FETCH (the only one
  with the UID), even when another session set them an instant before; a later change by
  another session is reported to it as an untagged FETCH;
- no BAD and no NO for valid commands (``OK [EXPUNGEISSUED]`` is fine: RFC 2180 §4.1);
- and at the end, no error line (ERROR, Traceback, SERVERBUG) in the server log.
Then the credential cache on the real server: a password changed with the CLI is in force at
the very next login.
"""

from __future__ import annotations

import imaplib
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port, wait_port

pytestmark = pytest.mark.integration

PASSWORD = "secret-pw-123"
USER = "race@example.test"
SESSIONS = 5
DURATION = 8.0  # seconds of racing: long enough for hundreds of collisions, short for CI
SEED_MESSAGES = 40
MESSAGE = b"From: a@example.test\r\nSubject: race %d\r\n\r\nbody %d\r\nline two\r\n"
_UNTAGGED = re.compile(rb"^(\d+) (EXISTS|EXPUNGE|FETCH|RECENT)\b(.*)$", re.S)
_UID = re.compile(rb"UID (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    tmp: Path = tmp_path_factory.mktemp("imaprace")
    port = free_port()
    srv = Server(tmp, listen_toml=f'imap = ["127.0.0.1:{port}"]',
                 extra_toml="[auth]\nfailure_delay = 0\nallow_plaintext_on_loopback = true\n")
    srv.add_user(USER, PASSWORD)
    srv.add_user("change@example.test", PASSWORD)
    srv.start()
    wait_port("127.0.0.1", port, proc=srv.proc)
    try:
        yield srv, port
    finally:
        srv.stop()


class View:
    """One session and the mailbox as it has been told of it (RFC 3501 §7.3.1, §7.4.1)."""

    def __init__(self, port: int, rng: random.Random) -> None:
        self.c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        self.c.login(USER, PASSWORD)
        self.rng = rng
        typ, data = self.c.select("INBOX")
        assert typ == "OK", data
        self.exists = int(data[0] or 0)
        self.uids: list[int | None] = [None] * self.exists  # None: UID not learnt yet
        self.stored: dict[int, set[str]] = {}  # uid → flags this session last set
        # For the problem reports: every line of the current command's response (tagged line
        # too), and of the few commands before it.
        self.raw: list[bytes] = []
        self.history: list[list[bytes]] = []
        original_get_line = self.c._get_line  # type: ignore[attr-defined]

        def get_line() -> bytes:
            line: bytes = original_get_line()
            self.raw.append(line)
            return line

        self.c._get_line = get_line  # type: ignore[attr-defined]
        self.problems: list[str] = []
        self.commands = 0
        self.learn_uids()

    # -- responses --------------------------------------------------------------------------

    def absorb(self) -> None:
        """Apply every untagged response imaplib collected, in the order received."""
        for raw in self.c._untagged_lines:  # type: ignore[attr-defined]
            self._one(raw)
        self.c._untagged_lines.clear()  # type: ignore[attr-defined]

    def _one(self, line: bytes) -> None:
        m = _UNTAGGED.match(line)
        if m is None:
            return
        n, kind, rest = int(m.group(1)), m.group(2), m.group(3)
        if kind == b"EXPUNGE":
            if not 1 <= n <= len(self.uids):
                self.problems.append(f"EXPUNGE {n} of {len(self.uids)}")
                return
            uid = self.uids.pop(n - 1)
            if uid is not None:
                self.stored.pop(uid, None)
        elif kind == b"EXISTS":
            if n < len(self.uids):
                self.problems.append(f"EXISTS {n} below {len(self.uids)} without EXPUNGE")
                return
            self.uids.extend([None] * (n - len(self.uids)))
        elif kind == b"FETCH":
            if not 1 <= n <= len(self.uids):
                self.problems.append(f"FETCH {n} of {len(self.uids)}")
                return
            u = _UID.search(rest)
            if u is not None:
                uid = int(u.group(1))
                known = self.uids[n - 1]
                if known is not None and known != uid:
                    self.problems.append(f"message {n} is UID {uid}, was {known}")
                self.uids[n - 1] = uid
            f = _FLAGS.search(rest)
            uid_here = self.uids[n - 1]
            if f is not None and uid_here is not None and uid_here in self.stored:
                # another session changed it: what the server says now is the truth
                self.stored[uid_here] = set(f.group(1).decode().split()) - {"\\Recent"}

    def run(self, name: str, fn: str, *args: str) -> list[bytes]:
        self.commands += 1
        self.history.append(self.raw)
        del self.history[:-4]
        self.raw = []
        self.c._untagged_lines = []  # type: ignore[attr-defined]
        try:
            typ, data = getattr(self.c, fn)(*args)
        except imaplib.IMAP4.error as exc:  # BAD or NO raised by imaplib for some commands
            self.problems.append(f"{name}: {exc}")
            return []
        self.absorb()
        if typ != "OK":
            self.problems.append(f"{name}: {typ} {data!r}")
        return [d if isinstance(d, bytes) else d[0] for d in data if d]

    # -- the checks --------------------------------------------------------------------------

    def learn_uids(self) -> None:
        """``UID FETCH 1:* (UID FLAGS)``: every FETCH line is checked against the map as it
        comes (``_one``); then the known UIDs must be ascending and unique."""
        self._install_line_hook()
        if self.uids:
            self.run("UID FETCH", "uid", "FETCH", "1:*", "(UID FLAGS)")
        known = [u for u in self.uids if u is not None]
        if known != sorted(known) or len(set(known)) != len(known):
            self.problems.append(f"UIDs not ascending and unique: {known[:20]}")

    def _install_line_hook(self) -> None:
        """imaplib files untagged responses by type; keep them in the order received too."""
        if hasattr(self.c, "_untagged_lines"):
            return
        self.c._untagged_lines = []  # type: ignore[attr-defined]
        original = self.c._append_untagged  # type: ignore[attr-defined]

        def hook(typ: str, dat: bytes | None) -> None:
            if typ in ("EXISTS", "EXPUNGE", "RECENT") and isinstance(dat, bytes):
                self.c._untagged_lines.append(dat + b" " + typ.encode())  # type: ignore[attr-defined]
            elif typ == "FETCH" and isinstance(dat, bytes) and b" " in dat:
                n, rest = dat.split(b" ", 1)
                self.c._untagged_lines.append(n + b" FETCH " + rest)  # type: ignore[attr-defined]
            original(typ, dat)

        self.c._append_untagged = hook  # type: ignore[attr-defined]

    # -- one random step ---------------------------------------------------------------------

    def step(self) -> None:
        op = self.rng.choice(["store", "store", "fetch", "fetch", "append", "expunge", "noop", "search"])
        known = [u for u in self.uids if u is not None]
        if op == "store" and known:
            uid = self.rng.choice(known)
            flags = set(self.rng.sample(["\\Flagged", "\\Answered", "$Label1", "\\Seen"], 2))
            lines = self.run("UID STORE", "uid", "STORE", str(uid), "FLAGS", "(" + " ".join(sorted(flags)) + ")")
            self.stored[uid] = flags
            seen: list[set[str]] = []
            for ln in lines:
                u, f = _UID.search(ln), _FLAGS.search(ln)
                if u is not None and f is not None and int(u.group(1)) == uid:
                    seen.append(set(f.group(1).decode().split()) - {"\\Recent"})
            # Only the STORE's own FETCH carries the UID (others' changes, reported after it,
            # do not without QRESYNC: RFC 7162 §3.2.4); it shows the flags after the STORE
            # (RFC 3501 §6.4.6), also when another session set them first (imapd.store rule 5).
            # None at all when the message was expunged meanwhile (imapd.store rule 4).
            if seen and seen != [flags]:
                self.problems.append(f"STORE {uid} {flags}: FETCH says {seen}; "
                                     f"response {self.raw!r}; before {self.history!r}")
        elif op == "fetch" and known:
            uid = self.rng.choice(known)
            self.run("UID FETCH", "uid", "FETCH", f"{uid}:{uid + 3}", "(UID FLAGS ENVELOPE BODY.PEEK[] BODYSTRUCTURE)")
        elif op == "append":
            n = self.rng.randrange(1_000_000)
            self.run("APPEND", "append", "INBOX", None, None, MESSAGE % (n, n))
        elif op == "expunge" and known:
            uid = self.rng.choice(known)
            self.run("UID STORE", "uid", "STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
            self.run("EXPUNGE", "expunge")
        elif op == "search":
            self.run("SEARCH", "search", None, "UNDELETED", "NOT", "FLAGGED")
        else:
            self.run("NOOP", "noop")
        self.learn_uids()


def _race(port: int, seed: int, until: float, views: list[View], errors: list[str]) -> None:
    try:
        v = View(port, random.Random(seed))
        views.append(v)
        while time.monotonic() < until:
            v.step()
        v.run("NOOP", "noop")
        v.learn_uids()
        v.c.logout()
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(f"session {seed}: {type(exc).__name__}: {exc}")


def test_sessions_racing_on_one_mailbox(server: tuple[Server, int]) -> None:
    srv, port = server
    seed = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    seed.login(USER, PASSWORD)
    for i in range(SEED_MESSAGES):
        assert seed.append("INBOX", None, None, MESSAGE % (i, i))[0] == "OK"
    seed.logout()
    views: list[View] = []
    errors: list[str] = []
    until = time.monotonic() + DURATION
    threads = [threading.Thread(target=_race, args=(port, s, until, views, errors)) for s in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DURATION + 60)
    assert not errors, errors
    assert len(views) == SESSIONS
    for v in views:
        for problem in v.problems[:10]:
            print(problem)  # shown in full by pytest when the test fails (the assertion is cut)
        assert not v.problems, v.problems[:10]
        assert v.commands > 20  # each session really worked
    final = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    final.login(USER, PASSWORD)
    typ, data = final.select("INBOX")
    count = int(data[0] or 0)
    typ, data = final.uid("FETCH", "1:*", "(UID)") if count else ("OK", [])
    assert typ == "OK" and len([d for d in data if d]) == count
    final.logout()
    log = srv.log
    for bad in ("SERVERBUG", "Traceback", " ERROR "):
        assert bad not in log, log[log.find(bad) - 2000:log.find(bad) + 2000]


def test_password_change_is_effective_at_the_next_login(server: tuple[Server, int]) -> None:
    """The credential cache (auth.credcache Rule 3) on the real server, the CLI changing it."""
    srv, port = server
    for _ in range(2):  # the second login is a cache hit
        c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        c.login("change@example.test", PASSWORD)
        c.logout()
    srv.cli("user", "passwd", "change@example.test", "--password-stdin", input="another-pw-456\n")
    c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        c.login("change@example.test", PASSWORD)
    c.login("change@example.test", "another-pw-456")
    c.logout()
