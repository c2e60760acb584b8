"""IMAP protocol fixes clients noticed (issue 18), each against the real server on loopback.

One server for the module, plaintext LOGIN allowed on loopback; every test has its own user so
that no mailbox count depends on another test. ``Raw`` is the byte-exact client of
``test_imap_clients``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port, wait_port
from tests.integration.test_imap_clients import Raw

pytestmark = pytest.mark.integration

PASSWORD = "secret-pw-123"
USERS = ("condstore", "keyword", "kw2", "binary", "names", "ident", "copyself", "minmax")
MESSAGE = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n"
           b"Message-ID: <m@example.test>\r\n\r\nbody line\r\n")


class Env:
    def __init__(self, srv: Server, port: int) -> None:
        self.srv = srv
        self.port = port

    def client(self, user: str, select: str | None = "INBOX") -> Raw:
        r = Raw(socket.create_connection(("127.0.0.1", self.port), timeout=15))
        assert r.line().startswith(b"* OK")
        r.ok(f'LOGIN "{user}@example.test" "{PASSWORD}"')
        if select is not None:
            r.ok(f"SELECT {select}")
        return r


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("imapfix")
    port = free_port()
    srv = Server(tmp, listen_toml=f'imap = ["127.0.0.1:{port}"]',
                 extra_toml="[auth]\nfailure_delay = 0\nallow_plaintext_on_loopback = true\n")
    for u in USERS:
        srv.add_user(f"{u}@example.test", PASSWORD)
    srv.start()
    wait_port("127.0.0.1", port, proc=srv.proc)
    try:
        yield Env(srv, port)
    finally:
        srv.stop()
    log = srv.log
    assert "Traceback" not in log and "SERVERBUG" not in log


def append(r: Raw, data: bytes = MESSAGE, mailbox: str = "INBOX", flags: str = "") -> None:
    r.send(b"a1 APPEND " + mailbox.encode() + (b" (" + flags.encode() + b")" if flags else b"")
           + b" {%d}\r\n" % len(data))
    assert r.line().startswith(b"+")
    r.send(data + b"\r\n")
    _, done = r.until(b"a1")
    assert done.startswith(b"OK"), done


def test_implicit_seen_reports_modseq_after_condstore(env: Env) -> None:
    """RFC 7162 §3.2: after ENABLE CONDSTORE every FETCH reporting a flag change has MODSEQ,
    the implicit \\Seen of RFC822/BODY[] included (imapclient's UID FETCH n (RFC822 FLAGS))."""
    r = env.client("condstore")
    append(r)
    append(r)
    r.ok("ENABLE CONDSTORE")
    lines = r.ok("UID FETCH 1 (RFC822 FLAGS)")
    fetch = [ln for ln in lines if b" FETCH " in ln]
    assert len(fetch) == 1 and b"\\Seen" in fetch[0] and re.search(rb"MODSEQ \(\d+\)", fetch[0]), fetch
    lines = r.ok("FETCH 2 (BODY[])")
    fetch = [ln for ln in lines if b" FETCH " in ln]
    assert re.search(rb"MODSEQ \(\d+\)", fetch[0]) and b"\\Seen" in fetch[0], fetch
    # a change by another session: reported with MODSEQ at this session's next NOOP
    other = env.client("condstore")
    other.ok("STORE 1 +FLAGS (\\Flagged)")
    lines = r.ok("NOOP")
    flagged = [ln for ln in lines if b"\\Flagged" in ln]
    assert flagged and re.search(rb"MODSEQ \(\d+\)", flagged[0]), lines
    other.close()
    r.close()


def test_new_keyword_announced_to_every_session(env: Env) -> None:
    """RFC 3501 §7.2.6: a new keyword gets FLAGS and OK [PERMANENTFLAGS] before any FETCH shows it."""
    r = env.client("keyword")
    append(r)
    other = env.client("keyword")
    lines = r.ok("STORE 1 +FLAGS ($Label1)")
    flags_at = next(i for i, ln in enumerate(lines) if ln.startswith(b"* FLAGS"))
    perm_at = next(i for i, ln in enumerate(lines) if b"[PERMANENTFLAGS" in ln)
    fetch_at = next(i for i, ln in enumerate(lines) if b" FETCH " in ln)
    assert b"$Label1" in lines[flags_at] and b"$Label1" in lines[perm_at]
    assert flags_at < fetch_at and perm_at < fetch_at, lines
    lines = other.ok("NOOP")
    flags_at = next(i for i, ln in enumerate(lines) if ln.startswith(b"* FLAGS"))
    fetch_at = next(i for i, ln in enumerate(lines) if b" FETCH " in ln)
    assert b"$Label1" in lines[flags_at] and flags_at < fetch_at, lines
    assert any(b"[PERMANENTFLAGS" in ln and b"$Label1" in ln for ln in lines), lines
    # an APPEND with a new keyword is announced too
    third = env.client("keyword")
    append(r, flags="$Label2")
    lines = third.ok("NOOP")
    assert any(ln.startswith(b"* FLAGS") and b"$Label2" in ln for ln in lines), lines
    for c in (r, other, third):
        c.close()


def test_binary_append_is_byte_exact(env: Env) -> None:
    """RFC 3516 §4.4: APPEND ~{n} keeps NUL and bare LF; BINARY[1] and BINARY.SIZE[1] exact."""
    r = env.client("binary")
    body = b"a\nb\x00c\nd"  # 7 octets, two bare LFs and a NUL
    msg = (b"From: a@example.test\r\nSubject: bin\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + body)
    r.send(b"b1 APPEND INBOX ~{%d}\r\n" % len(msg))
    assert r.line().startswith(b"+")
    r.send(msg + b"\r\n")
    _, done = r.until(b"b1")
    assert done.startswith(b"OK"), done
    lines = r.ok("FETCH 1 (BINARY.SIZE[1] RFC822.SIZE)")
    assert b"BINARY.SIZE[1] 7" in lines[-1] and b"RFC822.SIZE %d" % len(msg) in lines[-1], lines
    lines = r.ok("FETCH 1 (BINARY.PEEK[1])")
    assert lines[-1].endswith(b"BINARY[1] ~{7}\r\n" + body + b")"), lines
    lines = r.ok("FETCH 1 (BODY.PEEK[])")
    assert (b"{%d}\r\n" % len(msg)) + msg in lines[-1], lines
    r.close()


def test_mailbox_names_not_modified_utf7(env: Env) -> None:
    """Atom characters that are not valid modified UTF-7: NO for SELECT, LIST answers."""
    r = env.client("names", select=None)
    name = "!#$&'+,-.0123456789:;<=>?@^_|}"
    lines, done = r.cmd(f"SELECT {name}")
    assert done.startswith(b"NO"), done
    lines = r.ok(f'LIST "" {name}')
    assert not any(ln.startswith(b"* LIST") for ln in lines), lines
    lines = r.ok("LIST \"\" &-x*")
    r.ok("NOOP")  # still connected
    r.close()


def test_id_with_spaces(env: Env) -> None:
    r = env.client("ident", select=None)
    lines = r.ok('ID ( "name" "x" )')
    assert any(ln.startswith(b"* ID") for ln in lines), lines
    r.ok('ID ("name" "x" "version" "1")')
    r.ok("ID NIL")
    r.close()


def test_copy_and_move_into_selected(env: Env) -> None:
    """COPY and MOVE into the selected mailbox (RFC 6851 does not forbid it; Dovecot allows it)."""
    r = env.client("copyself")
    append(r)
    lines = r.ok("COPY 1 INBOX")
    assert any(b"EXISTS" in ln for ln in lines), lines
    lines, done = r.cmd("UID MOVE 1 INBOX")
    assert done.startswith(b"OK"), (lines, done)
    assert any(b"COPYUID" in ln for ln in lines) and any(b"EXPUNGE" in ln for ln in lines), lines
    lines = r.ok("UID FETCH 1:* (UID)")
    uids = sorted(int(m) for ln in lines for m in re.findall(rb"UID (\d+)", ln))
    assert uids == [2, 3], lines
    r.close()


def test_search_return_min_max_modseq(env: Env) -> None:
    """RFC 7162 §3.1.5: MIN/MAX with a MODSEQ criterion carry the MODSEQ of the message returned."""
    r = env.client("minmax")
    for _ in range(3):
        append(r)
    r.ok("STORE 3 +FLAGS (\\Flagged)")  # message 3 gets the highest MODSEQ
    lines = r.ok("FETCH 1:3 (MODSEQ)")
    modseq = {int(a): int(b) for a, b in (re.search(rb"\* (\d+) FETCH \(MODSEQ \((\d+)\)", ln).groups()
                                          for ln in lines)}
    lines = r.ok("SEARCH RETURN (MIN) MODSEQ 1")
    assert lines == [b"* ESEARCH (TAG \"t%d\") MIN 1 MODSEQ %d" % (r.n, modseq[1])], lines
    lines = r.ok("SEARCH RETURN (MAX) MODSEQ 1")
    assert lines == [b"* ESEARCH (TAG \"t%d\") MAX 3 MODSEQ %d" % (r.n, modseq[3])], lines
    lines = r.ok("SEARCH RETURN (MIN MAX) MODSEQ 1")
    assert lines == [b"* ESEARCH (TAG \"t%d\") MIN 1 MAX 3 MODSEQ %d" % (r.n, max(modseq.values()))], lines
    r.close()
