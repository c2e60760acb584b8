"""POP3 against the real server: Python's poplib and Debian's fetchmail.

One server per module (``pop3`` with STLS, ``pop3s`` with implicit TLS, ``imaps`` to watch POP3
deletions from IMAP; plaintext USER/PASS not allowed on loopback, the default), each test with
its own user. Mail is put in through SMTP on port 25 (real delivery).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import smtplib
import ssl
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port, wait_port

pytestmark = pytest.mark.integration

PASSWORD = "secret-pw-123"
USERS = ("alice", "bob", "carol", "dave", "erin")


@dataclass
class Env:
    srv: Server
    pop3: int  # STLS
    pop3s: int  # implicit TLS
    imaps: int

    def addr(self, user: str) -> str:
        return f"{user}@example.test"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    pop3, pop3s, imaps = free_port(), free_port(), free_port()
    srv = Server(tmp_path_factory.mktemp("pop3"), hostname="localhost",
                 listen_toml=f'pop3 = ["127.0.0.1:{pop3}"]\npop3s = ["127.0.0.1:{pop3s}"]\n'
                             f'imaps = ["127.0.0.1:{imaps}"]',
                 extra_toml="[auth]\nfailure_delay = 0\n")
    for u in USERS:
        srv.add_user(f"{u}@example.test", PASSWORD)
    srv.start()  # waits for port 25; the POP3 and IMAP listeners open just after it
    for port in (pop3, pop3s, imaps):
        wait_port("127.0.0.1", port, proc=srv.proc)
    try:
        yield Env(srv, pop3, pop3s, imaps)
    finally:
        srv.stop()


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's self-signed development certificate
    return ctx


def deliver(srv: Server, to: str, subject: str, body: str = "hello\r\n") -> None:
    before = len(srv.messages(to))
    msg = f"From: sender@remote.example\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}"
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=15) as c:
        c.sendmail("sender@remote.example", [to], msg.encode())
    assert len(srv.wait_messages(to, before + 1)) == before + 1, f"{subject} not delivered"


def pop3s(e: Env, user: str) -> poplib.POP3_SSL:
    c = poplib.POP3_SSL("127.0.0.1", e.pop3s, context=insecure(), timeout=15)
    c.user(e.addr(user))
    c.pass_(PASSWORD)
    return c


def uidls(c: poplib.POP3) -> dict[int, bytes]:
    _, lines, _ = c.uidl()
    return {int(n): u for n, u in (ln.split() for ln in lines)}


def subject_of(c: poplib.POP3, n: int) -> bytes:
    _, lines, _ = c.top(n, 0)
    return next(ln for ln in lines if ln.startswith(b"Subject:"))


def test_stls_user_pass_and_plaintext_refused(env: Env) -> None:
    c = poplib.POP3("127.0.0.1", env.pop3, timeout=15)
    try:
        assert "STLS" in c.capa()
        with pytest.raises(poplib.error_proto):  # RFC 2595 §2.3 / issue 6: no passwords in clear
            c.user(env.addr("alice"))
            c.pass_(PASSWORD)
    finally:
        c.close()
    c = poplib.POP3("127.0.0.1", env.pop3, timeout=15)
    try:
        c.stls(context=insecure())
        capa = c.capa()
        assert "STLS" not in capa and "USER" in capa and "UIDL" in capa and "TOP" in capa
        c.user(env.addr("alice"))
        assert c.pass_(PASSWORD).startswith(b"+OK")
        assert c.stat() == (0, 0)
        c.quit()
    finally:
        c.close()


def test_stat_list_uidl_top_retr_and_dele_only_at_quit(env: Env) -> None:
    user = "bob"
    to = env.addr(user)
    deliver(env.srv, to, "pop one", "line 1\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n")
    deliver(env.srv, to, "pop two", ("x" * 70 + "\r\n") * 70)
    deliver(env.srv, to, "pop three")
    c = pop3s(env, user)
    try:
        count, total = c.stat()
        assert count == 3
        _, listing, _ = c.list()
        sizes = {int(n): int(s) for n, s in (ln.split() for ln in listing)}
        assert sum(sizes.values()) == total
        first = uidls(c)
        assert len(set(first.values())) == 3
        for n in (1, 2, 3):
            _, lines, _ = c.retr(n)
            # LIST size = octets with CRLF line ends before dot-stuffing (RFC 1939 §11, issue 6).
            assert sum(len(ln) + 2 for ln in lines) == sizes[n], n
        _, lines, _ = c.retr(1)
        assert lines[-5:] == [b"line 1", b".starts with a dot", b"..two dots", b".", b"end"]
        _, head, _ = c.top(2, 0)
        assert b"Subject: pop two" in head and not any(b"xxxx" in ln for ln in head)
        assert head[-1] == b""  # the blank line ending the header, then no body lines
        _, head, _ = c.top(2, 1)
        assert head[-1].startswith(b"xxxx")
        # DELE hides the message in this session only; RSET brings it back.
        assert c.dele(1).startswith(b"+OK")
        assert c.stat()[0] == 2
        with pytest.raises(poplib.error_proto):
            c.retr(1)
        c.rset()
        assert c.stat()[0] == 3
        c.dele(2)
    finally:
        c.close()  # dropped without QUIT: nothing is deleted (RFC 1939 §6)
    c = pop3s(env, user)
    try:
        assert c.stat()[0] == 3
        assert uidls(c) == first  # UIDL values are stable across sessions (RFC 1939 §7)
        c.dele(2)
        assert c.quit().startswith(b"+OK")
    finally:
        c.close()
    c = pop3s(env, user)
    try:
        assert c.stat()[0] == 2
        assert set(uidls(c).values()) == {first[1], first[3]}
        assert [subject_of(c, 1), subject_of(c, 2)] == [b"Subject: pop one", b"Subject: pop three"]
        c.quit()
    finally:
        c.close()
    assert len(env.srv.messages(to)) == 2


def test_second_session_gets_in_use(env: Env) -> None:
    user = "carol"
    deliver(env.srv, env.addr(user), "locked")
    first = pop3s(env, user)
    try:
        second = poplib.POP3_SSL("127.0.0.1", env.pop3s, context=insecure(), timeout=15)
        try:
            second.user(env.addr(user))
            with pytest.raises(poplib.error_proto) as err:
                second.pass_(PASSWORD)
            assert b"[IN-USE]" in err.value.args[0]  # RFC 2449 §8.1.1
        finally:
            second.close()
        first.quit()
    finally:
        first.close()
    again = pop3s(env, user)  # the lock is released at QUIT
    try:
        assert again.stat()[0] == 1
        again.quit()
    finally:
        again.close()


def test_imap_session_sees_pop3_deletion_as_expunge(env: Env) -> None:
    user = "dave"
    to = env.addr(user)
    deliver(env.srv, to, "shared one")
    deliver(env.srv, to, "shared two")
    imap = imaplib.IMAP4_SSL("127.0.0.1", env.imaps, ssl_context=insecure(), timeout=15)
    try:
        imap.login(to, PASSWORD)
        assert imap.select("INBOX")[1] == [b"2"]
        c = pop3s(env, user)  # IMAP keeps working while POP3 holds the maildrop
        try:
            c.dele(1)
            c.quit()
        finally:
            c.close()
        imap.noop()
        assert imap.response("EXPUNGE")[1] == [b"1"]
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert [x[1] for x in data if isinstance(x, tuple)] == [b"Subject: shared two\r\n\r\n"]
    finally:
        imap.logout()


# -- fetchmail --------------------------------------------------------------------------------


def fetchmail(e: Env, tmp: Path, user: str, keep: bool, extra: str = "") -> tuple[int, list[bytes]]:
    """Run fetchmail over pop3s, each message handed to an MDA writing one file; (status, new files)."""
    exe = shutil.which("fetchmail")
    assert exe, "fetchmail is installed by `make test`"
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    mda = tmp / "mda.sh"
    mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {out}/msg.XXXXXXXX)"\n')
    mda.chmod(0o755)
    rc = tmp / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 with protocol POP3 port {e.pop3s} uidl:\n"
        f'  user "{e.addr(user)}" there with password "{PASSWORD}"\n'
        f"  ssl no sslcertck {'keep' if keep else 'nokeep fetchall'} {extra}\n"
        f'  mda "{mda}"\n')
    rc.chmod(stat.S_IRUSR | stat.S_IWUSR)  # fetchmail refuses a readable password file
    before = set(out.iterdir())
    res = subprocess.run([exe, "-f", str(rc), "-i", str(tmp / "fetchids"), "--nodetach", "--nosyslog",
                          "--pidfile", str(tmp / "fetchmail.pid")],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(tmp)))
    assert res.returncode in (0, 1), res.stdout + res.stderr  # 1: no new mail
    new = sorted(set(out.iterdir()) - before)
    return res.returncode, [p.read_bytes() for p in new]


def test_fetchmail_keep_uidl_then_nokeep(env: Env, tmp_path: Path) -> None:
    user = "erin"
    to = env.addr(user)
    deliver(env.srv, to, "fm one")
    deliver(env.srv, to, "fm two")
    status, got = fetchmail(env, tmp_path, user, keep=True)
    assert status == 0 and len(got) == 2
    assert sorted(b"fm one" in m for m in got) == [False, True]
    assert len(env.srv.messages(to)) == 2  # keep: left on the server
    # Only new messages, recognised by UIDL.
    deliver(env.srv, to, "fm three")
    status, got = fetchmail(env, tmp_path, user, keep=True)
    assert status == 0 and len(got) == 1 and b"Subject: fm three" in got[0]
    status, got = fetchmail(env, tmp_path, user, keep=True)
    assert status == 1 and got == []
    # nokeep (+ fetchall): everything, then deleted on the server.
    status, got = fetchmail(env, tmp_path, user, keep=False)
    assert status == 0 and len(got) == 3
    assert env.srv.messages(to) == []
    body = [m for m in got if b"fm two" in m][0]
    assert b"\r\n" not in body and body.endswith(b"hello\n")  # handed to the MDA with LF line ends
