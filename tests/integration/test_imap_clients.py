"""IMAP against the real server: Python's imaplib, a byte-exact socket client, mutt and mbsync.

One server per module (``imap`` with STARTTLS, ``imaps`` with implicit TLS; plaintext LOGIN not
allowed on loopback, the default), each test with its own user so that mailbox counts never
depend on another test. Mail is put in through SMTP on port 25, so delivery is real: the
messages the clients read are the ones local delivery wrote. Certificates: the self-signed one
the server makes at first start (``data_dir/tls/selfsigned.crt``), trusted by pinning it (mutt's
``certificate_file``, mbsync's ``CertificateFile``) or not checked (imaplib).
"""

from __future__ import annotations

import imaplib
import os
import pty
import re
import select
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port, wait_port

pytestmark = pytest.mark.integration

PASSWORD = "secret-pw-123"
# alice never receives mail (authentication, LIST, refusals); every other test has its own user.
USERS = ("alice", "carol", "dave", "erin", "heidi", "ivan")
SPECIAL = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
           "Archive": "\\Archive"}


@dataclass
class Env:
    srv: Server
    imap: int  # STARTTLS
    imaps: int  # implicit TLS

    def addr(self, user: str) -> str:
        return f"{user}@example.test"


def make_env(tmp: Path, extra: str = "", users: tuple[str, ...] = USERS) -> Env:
    imap, imaps = free_port(), free_port()
    # hostname "localhost": the self-signed certificate is made for it, and mbsync checks the
    # host name even for a pinned certificate (``Host localhost`` resolves through /etc/hosts).
    srv = Server(tmp, hostname="localhost",
                 listen_toml=f'imap = ["127.0.0.1:{imap}"]\nimaps = ["127.0.0.1:{imaps}"]',
                 extra_toml=f"[auth]\nfailure_delay = 0\n{extra}")
    for u in users:
        srv.add_user(f"{u}@example.test", PASSWORD)
    return Env(srv, imap, imaps)


def start(e: Env) -> None:
    e.srv.start()  # waits for port 25; the IMAP listeners open just after it
    for port in (e.imap, e.imaps):
        wait_port("127.0.0.1", port, proc=e.srv.proc)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("imap"))
    start(e)
    try:
        yield e
    finally:
        e.srv.stop()


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's self-signed development certificate
    return ctx


def deliver(srv: Server, to: str, subject: str, body: str = "hello\r\n",
            sender: str = "Sender <sender@remote.example>", headers: str = "") -> None:
    """Send one message through SMTP (port 25) and wait until it is in the Maildir."""
    before = len(srv.messages(to))
    m = re.search(r"<(.+)>", sender)
    env_from = m.group(1) if m else sender
    msg = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{headers}"
           f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n{body}")
    with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=15) as c:
        c.sendmail(env_from, [to], msg.encode())
    got = srv.wait_messages(to, before + 1)
    assert len(got) >= before + 1, f"{subject} not delivered to {to}"


def imaps(e: Env, user: str) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", e.imaps, ssl_context=insecure(), timeout=15)
    c.login(e.addr(user), PASSWORD)
    return c


class Raw:
    """A byte-exact IMAP client: send lines, read responses (literals kept inline)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.n = 0

    @classmethod
    def tls(cls, port: int) -> Raw:
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        r = cls(insecure().wrap_socket(raw, server_hostname="localhost"))
        greeting = r.line()
        assert greeting.startswith(b"* OK"), greeting
        return r

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed; pending {self.buf!r}")
        self.buf += chunk

    def line(self) -> bytes:
        """One response line; a literal ``{n}`` is read and kept inline with what follows it."""
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            part, self.buf = self.buf.split(b"\r\n", 1)
            out += part
            m = re.search(rb"\{(\d+)\}$", part)
            if m is None:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self._fill()
            out += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, text: str | bytes) -> tuple[list[bytes], bytes]:
        """Run one command: (untagged/continuation lines, the tagged completion line)."""
        self.n += 1
        tag = f"t{self.n}".encode()
        data = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + data + b"\r\n")
        return self.until(tag)

    def until(self, tag: bytes) -> tuple[list[bytes], bytes]:
        lines: list[bytes] = []
        while True:
            ln = self.line()
            if ln.startswith(tag + b" "):
                return lines, ln[len(tag) + 1:]
            lines.append(ln)

    def ok(self, text: str | bytes) -> list[bytes]:
        lines, done = self.cmd(text)
        assert done.startswith(b"OK"), (text, done, lines)
        return lines

    def login(self, user: str) -> None:
        self.ok(f'LOGIN "{user}" "{PASSWORD}"')

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (TimeoutError, socket.timeout):
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True


def caps(c: imaplib.IMAP4) -> set[str]:
    return {str(x).upper() for x in c.capabilities}


# -- 1. imaplib: authentication --------------------------------------------------------------


def test_starttls_login_and_logindisabled_in_clear(env: Env) -> None:
    c = imaplib.IMAP4("127.0.0.1", env.imap, timeout=15)
    try:
        before = caps(c)
        assert {"STARTTLS", "LOGINDISABLED"} <= before  # RFC 3501 §6.2.3, §7.2.1
        assert "AUTH=PLAIN" not in before
        with pytest.raises(imaplib.IMAP4.error):  # NO [PRIVACYREQUIRED] (RFC 5530 §3)
            c.login(env.addr("alice"), PASSWORD)
        c.starttls(ssl_context=insecure())
        after = caps(c)
        assert "LOGINDISABLED" not in after and "STARTTLS" not in after  # RFC 3501 §6.2.1
        assert "IMAP4REV1" in after and "IDLE" in after and "UIDPLUS" in after and "MOVE" in after
        typ, _ = c.login(env.addr("alice"), PASSWORD)
        assert typ == "OK"
    finally:
        c.logout()


def test_imaps_login_and_wrong_password(env: Env) -> None:
    c = imaplib.IMAP4_SSL("127.0.0.1", env.imaps, ssl_context=insecure(), timeout=15)
    try:
        assert "STARTTLS" not in caps(c) and "LOGINDISABLED" not in caps(c)
        with pytest.raises(imaplib.IMAP4.error) as err:
            c.login(env.addr("alice"), "wrong-password")
        assert "AUTHENTICATIONFAILED" in str(err.value)  # RFC 5530 §3
        assert c.login(env.addr("alice"), PASSWORD)[0] == "OK"
        assert c.select("INBOX")[0] == "OK"
    finally:
        c.logout()


def test_plaintext_login_on_loopback_when_allowed(tmp_path: Path) -> None:
    e = make_env(tmp_path, extra="allow_plaintext_on_loopback = true\n", users=("alice",))
    start(e)
    try:
        c = imaplib.IMAP4("127.0.0.1", e.imap, timeout=15)
        try:
            assert "LOGINDISABLED" not in caps(c)
            assert c.login(e.addr("alice"), PASSWORD)[0] == "OK"
        finally:
            c.logout()
    finally:
        e.srv.stop()


# -- 1. imaplib: mailboxes, messages ---------------------------------------------------------


LIST_LINE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"(?P<sep>[^"]*)"|NIL) (?P<name>.+)$')


def test_list_shows_default_folders_with_special_use(env: Env) -> None:
    c = imaps(env, "alice")
    try:
        typ, data = c.list()
        assert typ == "OK"
        names = {}
        for item in data:
            assert isinstance(item, bytes)
            m = LIST_LINE.match(item)
            assert m, item
            names[m.group("name").strip(b'"').decode()] = m.group("attrs").decode().split()
        assert {"INBOX", *SPECIAL} <= set(names), names
    finally:
        c.logout()
    # RFC 6154 §2: the attributes are returned with RETURN (SPECIAL-USE) (LIST-EXTENDED).
    r = Raw.tls(env.imaps)
    try:
        r.login(env.addr("alice"))
        lines = r.ok('LIST "" "*" RETURN (SPECIAL-USE)')
        got = {}
        for ln in lines:
            m = LIST_LINE.match(ln[len(b"* LIST "):])
            assert ln.startswith(b"* LIST ") and m, ln
            got[m.group("name").strip(b'"').decode()] = m.group("attrs").decode().split()
        for name, attr in SPECIAL.items():
            assert attr in got[name], (name, got[name])
        assert not any(a in SPECIAL.values() for a in got["INBOX"])
        # The selection option lists only the special-use mailboxes (RFC 6154 §3).
        only = r.ok('LIST (SPECIAL-USE) "" "*"')
        listed = {m.group("name").strip(b'"').decode() for m in map(LIST_LINE.match, (ln[7:] for ln in only)) if m}
        assert len(listed) == len(only), only
        assert listed == set(SPECIAL), listed
    finally:
        r.close()


def _fetch_items(data: Sequence[object]) -> list[bytes]:
    """imaplib's FETCH data: the response text of each message (literals left out)."""
    out = []
    for x in data:
        head = x[0] if isinstance(x, tuple) else x
        if isinstance(head, bytes) and head != b")":
            out.append(head)
    return out


def _b(item: object) -> bytes:
    """The response text of one imaplib data item (the part before a literal, if any)."""
    head = item[0] if isinstance(item, tuple) else item
    assert isinstance(head, bytes), item
    return head


def _lit(item: object) -> bytes:
    """The literal of one imaplib data item."""
    assert isinstance(item, tuple) and isinstance(item[1], bytes), item
    return item[1]


def _num(pattern: bytes, text: bytes) -> int:
    m = re.search(pattern, text)
    assert m is not None, (pattern, text)
    return int(m.group(1))


def test_select_fetch_store_search_copy_move_expunge_append(env: Env) -> None:
    user = "carol"
    to = env.addr(user)
    deliver(env.srv, to, "alpha one", "the needle-7f3 is here\r\n", sender="Ann <ann@remote.example>")
    deliver(env.srv, to, "beta two", "nothing to see\r\n", sender="Bert <bert@other.example>",
            headers="X-Tag: red-flag\r\n")
    deliver(env.srv, to, "gamma three", "plain text\r\n")
    c = imaps(env, user)
    try:
        assert c.select("INBOX") == ("OK", [b"3"])
        assert c.response("UIDVALIDITY")[1][0]
        # FETCH of several items for all messages.
        typ, data = c.fetch("1:*", "(UID FLAGS RFC822.SIZE ENVELOPE)")
        assert typ == "OK"
        items = _fetch_items(data)
        assert len(items) == 3, data
        uids = [_num(rb"UID (\d+)", it) for it in items]
        assert uids == sorted(uids) and len(set(uids)) == 3
        assert b'"alpha one"' in items[0] and b"ann" in items[0] and b"remote.example" in items[0]
        sizes = [_num(rb"RFC822\.SIZE (\d+)", it) for it in items]
        # UID FETCH BODY.PEEK[]: the whole message, CRLF line ends, RFC822.SIZE octets, not \Seen.
        typ, data = c.uid("FETCH", str(uids[0]), "(BODY.PEEK[])")
        assert typ == "OK"
        whole = _lit(data[0])
        assert len(whole) == sizes[0]
        assert b"Subject: alpha one\r\n" in whole and whole.endswith(b"the needle-7f3 is here\r\n")
        assert b"\n" not in whole.replace(b"\r\n", b"")
        on_disk = [m for m in env.srv.messages(to) if b"alpha one" in m][0]
        assert whole == on_disk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        typ, data = c.fetch("1", "(FLAGS)")
        assert b"\\Seen" not in _b(data[0])
        typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert _lit(data[0]) == b"Subject: alpha one\r\n\r\n"
        # A non-PEEK body fetch sets \Seen (RFC 3501 §6.4.5).
        typ, data = c.fetch("1", "(BODY[TEXT])")
        assert _lit(data[0]) == b"the needle-7f3 is here\r\n"
        typ, data = c.fetch("1", "(FLAGS)")
        assert b"\\Seen" in _b(data[0])

        def search(*criteria: str) -> list[int]:
            typ, data = c.search(None, *criteria)
            assert typ == "OK", (criteria, data)
            return [int(x) for x in _b(data[0] or b"").split()]

        assert search("TEXT", "needle-7f3") == [1]
        assert search("BODY", "needle-7f3") == [1]
        assert search("TEXT", "red-flag") == [2]  # TEXT covers the header too
        assert search("HEADER", "X-Tag", "red-flag") == [2]
        assert search("FROM", "ann@remote.example") == [1]
        assert search("SUBJECT", "BETA") == [2]  # case-insensitive
        assert search("SINCE", "1-Jan-2000") == [1, 2, 3]
        assert search("SINCE", "1-Jan-2100") == []
        assert search("UNSEEN") == [2, 3]
        assert search("OR", "SUBJECT", "alpha", "SUBJECT", "gamma") == [1, 3]
        assert search("NOT", "SUBJECT", "beta") == [1, 3]
        assert search("NOT", "OR", "FROM", "ann", "FROM", "bert") == [3]
        typ, data = c.uid("SEARCH", "SUBJECT", "gamma")
        assert data == [str(uids[2]).encode()]
        # STORE: +FLAGS answers FETCH FLAGS; .SILENT does not (RFC 3501 §6.4.6); keywords.
        typ, data = c.store("2", "+FLAGS", "(\\Flagged)")
        assert typ == "OK" and b"\\Flagged" in _b(data[0])
        assert search("FLAGGED") == [2]
        typ, data = c.store("2", "-FLAGS.SILENT", "(\\Flagged)")
        assert typ == "OK" and data in ([None], [])
        assert search("FLAGGED") == []
        c.store("3", "+FLAGS", "($Important)")
        assert search("KEYWORD", "$Important") == [3]
        # COPY → COPYUID (RFC 4315 §3).
        typ, data = c.copy("1", "Archive")
        assert typ == "OK" and re.search(rb"\[COPYUID \d+ %d \d+\]" % uids[0], _b(data[0])), data
        assert b"MESSAGES 1" in _b(c.status("Archive", "(MESSAGES)")[1][0])
        # UID MOVE → COPYUID and EXPUNGE (RFC 6851 §4.3).
        typ, data = c.uid("MOVE", str(uids[1]), "Trash")
        assert typ == "OK", data
        assert c.response("EXPUNGE")[1] == [b"2"]
        assert b"MESSAGES 1" in _b(c.status("Trash", "(MESSAGES)")[1][0])
        # STORE \Deleted + EXPUNGE.
        c.store("1", "+FLAGS", "(\\Deleted)")
        typ, data = c.expunge()
        assert typ == "OK" and data == [b"1"]
        assert c.select("INBOX")[1] == [b"1"]
        # APPEND → APPENDUID (RFC 4315 §3), with flags and a date.
        draft = b"From: carol@example.test\r\nSubject: draft 1\r\n\r\nunfinished\r\n"
        typ, appended = c.append("Drafts", "(\\Draft \\Seen)", imaplib.Time2Internaldate(1.7e9), draft)
        assert typ == "OK"
        m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", _b(appended[0]))
        assert m, appended
        assert c.select("Drafts")[1] == [b"1"]
        typ, data = c.uid("FETCH", m.group(2).decode(), "(FLAGS INTERNALDATE BODY.PEEK[])")
        assert b"\\Draft" in _b(data[0]) and b"14-Nov-2023" in _b(data[0])
        assert _lit(data[0]) == draft
    finally:
        c.logout()
    # Server side: Maildir++ folders hold the copies; INBOX keeps only the kept message.
    md = env.srv.maildir(to)
    assert len(env.srv.messages(to)) == 1
    archived = [p.read_bytes() for p in _local_files(md / ".Archive")]
    assert len(archived) == 1 and b"alpha one" in archived[0]
    trash = [p.read_bytes() for p in _local_files(md / ".Trash")]
    assert len(trash) == 1 and b"beta two" in trash[0]


# -- 1. several sessions, IDLE -----------------------------------------------------------------


def test_two_sessions_see_each_others_changes(env: Env) -> None:
    user = "dave"
    to = env.addr(user)
    deliver(env.srv, to, "first")
    deliver(env.srv, to, "second")
    a, b = Raw.tls(env.imaps), Raw.tls(env.imaps)
    try:
        for r in (a, b):
            r.login(to)
            assert b"* 2 EXISTS" in r.ok("SELECT INBOX")
        # A flag change in A reaches B as an untagged FETCH FLAGS.
        a.ok("STORE 1 +FLAGS (\\Flagged)")
        lines = b.ok("NOOP")
        assert any(re.match(rb"\* 1 FETCH \(.*FLAGS \([^)]*\\Flagged", ln) for ln in lines), lines
        # New mail reaches both.
        deliver(env.srv, to, "third")
        lines = b.ok("NOOP")
        assert b"* 3 EXISTS" in lines, lines
        # A expunges message 2: B is not told during a FETCH (RFC 3501 §7.4.1) but at NOOP.
        a.ok("STORE 2 +FLAGS (\\Deleted)")
        assert b"* 2 EXPUNGE" in a.ok("EXPUNGE")
        lines = b.ok("FETCH 1 (FLAGS)")
        assert not any(b"EXPUNGE" in ln for ln in lines), lines
        lines = b.ok("NOOP")
        assert b"* 2 EXPUNGE" in lines, lines
        lines = b.ok("FETCH 1:* (UID)")
        assert len([ln for ln in lines if b"FETCH" in ln]) == 2
    finally:
        a.close()
        b.close()


def test_idle_sees_smtp_delivery_within_one_second(env: Env) -> None:
    user = "erin"
    to = env.addr(user)
    r = Raw.tls(env.imaps)
    try:
        r.login(to)
        assert b"* 0 EXISTS" in r.ok("SELECT INBOX")
        r.send(b"i1 IDLE\r\n")
        assert r.line().startswith(b"+")
        tok = uuid.uuid4().hex
        msg = f"From: x@remote.example\r\nTo: {to}\r\nSubject: {tok}\r\n\r\nping\r\n"
        with smtplib.SMTP("127.0.0.1", env.srv.smtp_port, timeout=15) as s:
            s.sendmail("x@remote.example", [to], msg.encode())
        sent = time.monotonic()
        on_disk: float | None = None
        seen: float | None = None
        r.sock.settimeout(0.02)
        while seen is None and time.monotonic() - sent < 15:
            if on_disk is None and env.srv.message_paths(to):
                on_disk = time.monotonic()
            try:
                ln = r.line()
            except (TimeoutError, socket.timeout):
                continue
            if ln == b"* 1 EXISTS":
                seen = time.monotonic()
        assert seen is not None, "no EXISTS during IDLE"
        on_disk = on_disk or seen
        assert seen - on_disk <= 1.0, f"EXISTS came {seen - on_disk:.2f} s after delivery"
        r.sock.settimeout(15)
        r.send(b"DONE\r\n")
        _, done = r.until(b"i1")
        assert done.startswith(b"OK")
    finally:
        r.close()


# -- 1. bad input --------------------------------------------------------------------------


def test_mailbox_names_with_dotdot_are_refused(env: Env) -> None:
    r = Raw.tls(env.imaps)
    try:
        r.login(env.addr("alice"))
        for name in ("../evil", "a/../../evil", "..", "Archive/..", "/etc", "../bob@example.test"):
            for verb in ("CREATE", "SELECT", "DELETE"):
                _, done = r.cmd(f'{verb} "{name}"')
                assert done.startswith(b"NO"), (verb, name, done)
            _, done = r.cmd(f'RENAME "Archive" "{name}"')
            assert done.startswith(b"NO"), ("RENAME", name, done)
        r.ok("NOOP")
    finally:
        r.close()
    root = env.srv.data_dir / "mail"
    assert not [p for p in root.rglob("*evil*")]
    assert not (env.srv.data_dir / "evil").exists()


def test_huge_literal_is_refused_before_it_is_read(env: Env) -> None:
    r = Raw.tls(env.imaps)
    try:
        r.login(env.addr("alice"))
        r.send(b"a1 APPEND INBOX {4000000000}\r\n")
        reply = r.line()
        # No continuation: NO [TOOBIG] (RFC 7889 §3 / RFC 4469) or BAD — never "+".
        assert reply.startswith(b"a1 NO") or reply.startswith(b"a1 BAD"), reply
        r.ok("NOOP")  # the session goes on: nothing of the literal was sent
        r.send(b"a2 APPEND INBOX {4000000000+}\r\nxxxx")  # non-synchronising (RFC 7888 §4)
        reply = r.line()
        assert not reply.startswith(b"a2 OK") and not reply.startswith(b"+"), reply
    finally:
        r.close()
    assert env.srv.messages(env.addr("alice")) == []
    assert env.srv.proc is not None and env.srv.proc.poll() is None


def test_too_many_bad_commands_end_with_bye(env: Env) -> None:
    r = Raw.tls(env.imaps)
    try:
        bye = None
        for i in range(100):
            try:
                r.send(f"b{i} FROBNICATE now\r\n".encode())
                ln = r.line()
            except (ConnectionError, ssl.SSLError, OSError):
                break
            if ln.startswith(b"* BYE"):
                bye = i
                break
            assert ln.startswith(f"b{i} BAD".encode()), ln
        assert bye is not None and bye < 100, "no BYE after 100 bad commands"
        assert r.closed()
    finally:
        r.close()


# -- 2. mutt -----------------------------------------------------------------------------------


def _server_cert(e: Env) -> Path:
    cert = e.srv.data_dir / "tls" / "selfsigned.crt"
    assert cert.exists(), "the server writes its self-signed certificate at start"
    return cert


def run_tty(argv: list[str], env: dict[str, str], timeout: float = 30.0) -> tuple[int, bytes]:
    """Run a curses program on a pseudo-terminal (mutt needs one); return (status, screen bytes)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                            start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"{argv[0]} did not finish in {timeout} s; screen: {out[-3000:]!r}")
        return proc.wait(5), out
    finally:
        os.close(master)


def test_mutt_reads_inbox_moves_and_deletes(env: Env, tmp_path: Path) -> None:
    mutt = shutil.which("mutt")
    assert mutt, "mutt is installed by `make test`"
    user = "heidi"
    to = env.addr(user)
    deliver(env.srv, to, "keep-me please")
    deliver(env.srv, to, "move-me to archive")
    deliver(env.srv, to, "delete-me now")
    muttrc = tmp_path / "muttrc"
    url = f"imaps://heidi%40example.test@127.0.0.1:{env.imaps}"
    muttrc.write_text(
        f'set folder="{url}/"\n'
        f'set spoolfile="+INBOX"\n'
        f'set imap_user="{to}"\n'
        f'set imap_pass="{PASSWORD}"\n'
        f'set certificate_file="{_server_cert(env)}"\n'
        "set ssl_verify_host=no\n"
        "set ssl_force_tls=yes\n"
        "set imap_passive=no\n"
        "set move=no\nset delete=yes\nset quit=yes\nset confirmappend=no\nset confirmcreate=no\n"
        "set mark_old=no\nset beep=no\nset sort=date-sent\nset record=''\nset wait_key=no\n"
        "set header_cache=''\nset message_cachedir=''\nset mail_check=1\nset timeout=1\n"
    )
    keys = ("<tag-pattern>~s move-me<enter><tag-prefix><save-message>=Archive<enter>"
            "<delete-pattern>~s delete-me<enter><sync-mailbox><quit>")
    env_vars = dict(os.environ, TERM="xterm", HOME=str(tmp_path), LANG="C.UTF-8")
    status, screen = run_tty([mutt, "-n", "-F", str(muttrc), "-f", f"{url}/INBOX",
                              "-e", f'push "{keys}"'], env_vars, timeout=45)
    assert status == 0, screen[-3000:]
    c = imaps(env, user)
    try:
        c.select("INBOX")
        typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = b"".join(x[1] for x in data if isinstance(x, tuple))
        assert b"keep-me" in subjects and b"move-me" not in subjects and b"delete-me" not in subjects, data
        c.select("Archive")
        typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = b"".join(x[1] for x in data if isinstance(x, tuple))
        assert b"move-me" in subjects, data
    finally:
        c.logout()


# -- 3. mbsync -------------------------------------------------------------------------------


def _local_files(folder: Path) -> list[Path]:
    return [p for d in ("cur", "new") if (folder / d).is_dir() for p in (folder / d).iterdir()]


def _flags_of(p: Path) -> str:
    return p.name.split(":2,", 1)[1] if ":2," in p.name else ""


def test_mbsync_two_way_sync(env: Env, tmp_path: Path) -> None:
    mbsync = shutil.which("mbsync")
    assert mbsync, "isync (mbsync) is installed by `make test`"
    user = "ivan"
    to = env.addr(user)
    deliver(env.srv, to, "sync-one")
    deliver(env.srv, to, "sync-two")
    deliver(env.srv, to, "sync-three")
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        "IMAPAccount pigeon\n"
        "Host localhost\n"
        f"Port {env.imaps}\n"
        f"User {to}\n"
        f"Pass {PASSWORD}\n"
        "SSLType IMAPS\n"
        f"CertificateFile {_server_cert(env)}\n"
        "\n"
        "IMAPStore remote\nAccount pigeon\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX Archive\n"
        "Create Both\nExpunge Both\nSyncState *\nSync All\n"
    )

    def sync() -> None:
        res = subprocess.run([mbsync, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, HOME=str(tmp_path)))
        assert res.returncode == 0, res.stdout + res.stderr

    def local_subjects(folder: str) -> dict[str, Path]:
        out = {}
        for p in _local_files(local / folder):
            m = re.search(rb"^Subject: (.*?)\r?$", p.read_bytes(), re.MULTILINE)
            assert m
            out[m.group(1).decode()] = p
        return out

    def remote(folder: str) -> dict[str, bytes]:
        c = imaps(env, user)
        try:
            assert c.select(folder)[0] == "OK"
            typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            out = {}
            for x in data:
                if isinstance(x, tuple):
                    out[x[1].decode().split(":", 1)[1].strip()] = x[0]
            return out
        except imaplib.IMAP4.error:
            return {}
        finally:
            c.logout()

    # 1. New mail arrives locally.
    sync()
    assert set(local_subjects("INBOX")) == {"sync-one", "sync-two", "sync-three"}
    # 2. A flag change near → far (\Flagged), far → near (\Seen).
    p = local_subjects("INBOX")["sync-one"]
    p.rename(p.with_name(p.name.split(":2,")[0] + ":2," + "".join(sorted(_flags_of(p) + "F"))))
    c = imaps(env, user)
    try:
        c.select("INBOX")
        typ, data = c.search(None, "SUBJECT", "sync-two")
        c.store(data[0].decode(), "+FLAGS", "(\\Seen)")
    finally:
        c.logout()
    sync()
    assert b"\\Flagged" in remote("INBOX")["sync-one"]
    assert "S" in _flags_of(local_subjects("INBOX")["sync-two"])
    # 3. A move on the server (INBOX → Archive) shows locally as a move.
    c = imaps(env, user)
    try:
        c.select("INBOX")
        typ, data = c.uid("SEARCH", "SUBJECT", "sync-three")
        assert c.uid("MOVE", data[0].decode(), "Archive")[0] == "OK"
    finally:
        c.logout()
    sync()
    assert "sync-three" not in local_subjects("INBOX")
    assert "sync-three" in local_subjects("Archive")
    # 4. A delete near (file removed) → expunged far.
    local_subjects("INBOX")["sync-two"].unlink()
    sync()
    assert set(remote("INBOX")) == {"sync-one"}
    assert set(remote("Archive")) == {"sync-three"}
    assert len(env.srv.messages(to)) == 1
