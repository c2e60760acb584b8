"""Submission (587 STARTTLS, 465 implicit TLS) with AUTH against the real server.

Clients: Python's smtplib, a raw socket for what smtplib would hide (STARTTLS injection), and
Debian's swaks and msmtp. Certificates: the self-signed one the server makes at first start,
or ones made here with openssl for the reload test.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port

pytestmark = pytest.mark.integration

PASSWORD = "secret-pw-123"


@dataclass
class Sub:
    srv: Server
    port: int  # submission (STARTTLS)
    tls_port: int  # submissions (implicit TLS)


def make_sub(tmp: Path, auth_toml: str = "", extra: str = "") -> Sub:
    port, tls_port = free_port(), free_port()
    srv = Server(tmp, listen_toml=f'submission = ["127.0.0.1:{port}"]\nsubmissions = ["127.0.0.1:{tls_port}"]',
                 extra_toml=f"[auth]\nfailure_delay = 0\n{auth_toml}\n{extra}")
    for u in ("alice", "bob"):
        srv.add_user(f"{u}@example.test", PASSWORD)
    srv.cli("alias", "add", "sales@example.test", "alice@example.test")
    srv.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test")
    return Sub(srv, port, tls_port)


@pytest.fixture(scope="module")
def sub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sub]:
    s = make_sub(tmp_path_factory.mktemp("sub"), extra="[submission]\nrecipients_per_message = 3")
    s.srv.start()
    try:
        yield s
    finally:
        s.srv.stop()


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the dev default is a self-signed certificate
    return ctx


def login(s: Sub, user: str = "alice@example.test") -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", s.port, timeout=15)
    c.ehlo("client.test")
    c.starttls(context=insecure())
    c.ehlo("client.test")
    c.login(user, PASSWORD)
    return c


def wait_token(srv: Server, address: str, tok: str, timeout: float = 15.0) -> list[bytes]:
    """The messages in ``address``'s mailbox that contain ``tok`` (the mailbox is shared by the
    module's tests, so a count would not do)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in srv.messages(address) if tok.encode() in m]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def msg(sender: str, to: str, subject: str) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


def test_submission_needs_auth_and_auth_needs_tls(sub: Sub) -> None:
    with smtplib.SMTP("127.0.0.1", sub.port, timeout=15) as c:
        code, text = c.ehlo("client.test")
        assert code == 250 and b"STARTTLS" in text
        assert b"AUTH" not in text  # RFC 4954 §4: no password mechanisms in the clear
        code, text = c.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQtcHctMTIz")
        assert code == 538 and text.startswith(b"5.7.11")
        code, text = c.docmd("MAIL", "FROM:<alice@example.test>")
        assert code == 530 and text.startswith(b"5.7.0")


def test_login_relays_to_other_domains_and_delivers_locally(sub: Sub) -> None:
    tok = uuid.uuid4().hex
    with login(sub) as c:
        refused = c.sendmail("alice@example.test", ["bob@example.test", "someone@remote.test"],
                             msg("Alice <alice@example.test>", "bob@example.test", tok))
        assert refused == {}  # the remote recipient is accepted: authenticated users relay
    [got] = wait_token(sub.srv, "bob@example.test", tok)
    m = email.message_from_bytes(got, policy=email.policy.default)
    assert m["Message-ID"] and m["Date"]  # RFC 6409 §8 fix-ups
    received = str(m["Received"])
    assert "with ESMTPSA" in received and "TLSv1." in received  # RFC 3848; TLS version and cipher
    assert "cipher" in received
    # The remote copy waits in the queue (the test DNS answers SERVFAIL).
    assert any(r["address"] == "someone@remote.test" for q in sub.srv.queue_list() for r in q["recipients"])


def test_port_25_still_refuses_relay_and_offers_no_auth(sub: Sub) -> None:
    with smtplib.SMTP("127.0.0.1", sub.srv.smtp_port, timeout=15) as c:
        code, text = c.ehlo("client.test")
        assert b"STARTTLS" in text and b"AUTH" not in text
        c.starttls(context=insecure())
        code, text = c.ehlo("client.test")
        assert b"AUTH" not in text  # [auth] smtp_auth is off by default
        c.mail("alice@example.test")
        code, text = c.rcpt("someone@remote.test")
        assert code == 554 and text.startswith(b"5.7.1")


def test_sender_binding_on_envelope_and_header(sub: Sub) -> None:
    with login(sub) as c:
        code, text = c.mail("bob@example.test")
        assert code == 553 and text.startswith(b"5.7.1")
        for allowed in ("alice@example.test", "Alice+lists@Example.test", "sales@example.test", "<>"):
            c.rset()
            code, _ = c.docmd("MAIL", f"FROM:<{allowed.strip('<>')}>")
            assert code == 250, allowed
        c.rset()
        code, _ = c.mail("team@example.test")  # a shared alias is not hers
        assert code == 553
        c.rset()
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail("alice@example.test", ["bob@example.test"],
                       msg("The Boss <bob@example.test>", "bob@example.test", "spoof"))
        assert err.value.smtp_code == 553 and err.value.smtp_error.startswith(b"5.7.1")
    # An identity the operator grants lets her use it.
    sub.srv.cli("user", "identity", "alice@example.test", "--set", "@example.org")
    with login(sub) as c:
        assert c.mail("news@example.org")[0] == 250


def test_recipient_limit_per_message(sub: Sub) -> None:
    with login(sub) as c:
        c.mail("alice@example.test")
        for i in range(3):
            assert c.rcpt(f"r{i}@remote.test")[0] == 250
        code, text = c.rcpt("r4@remote.test")
        assert code == 450 and text.startswith(b"4.7.1")


def test_implicit_tls_on_submissions(sub: Sub) -> None:
    tok = uuid.uuid4().hex
    with smtplib.SMTP_SSL("127.0.0.1", sub.tls_port, timeout=15, context=insecure()) as c:
        code, text = c.ehlo("client.test")
        assert b"AUTH PLAIN LOGIN" in text and b"STARTTLS" not in text
        c.login("bob@example.test", PASSWORD)
        c.sendmail("bob@example.test", ["alice@example.test"], msg("bob@example.test", "alice@example.test", tok))
    got = wait_token(sub.srv, "alice@example.test", tok)
    assert len(got) == 1


def test_starttls_command_injection_is_discarded(sub: Sub) -> None:
    """CVE-2011-0411: commands pipelined with STARTTLS must not be run after the handshake."""
    raw = socket.create_connection(("127.0.0.1", sub.port), timeout=15)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"220")
    raw.sendall(b"EHLO client.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    raw.sendall(b"STARTTLS\r\nRSET\r\nNOOP\r\n")  # injected in the clear
    assert f.readline().startswith(b"220 2.0.0")
    tls = insecure().wrap_socket(raw, server_hostname="mx.example.test")
    try:
        tls.sendall(b"EHLO client.test\r\n")
        tf = tls.makefile("rb")
        first = tf.readline()
        assert first.startswith(b"250-") or first.startswith(b"250 "), first  # the EHLO reply, nothing else
        lines = [first]
        while not lines[-1].startswith(b"250 "):
            lines.append(tf.readline())
        assert any(b"AUTH PLAIN LOGIN" in line for line in lines)
        tls.sendall(b"NOOP\r\n")
        assert tf.readline().startswith(b"250 2.0.0")
    finally:
        tls.close()


def _cert_fingerprint(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        with insecure().wrap_socket(raw, server_hostname="mx.example.test") as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return hashlib.sha256(der).hexdigest()


def _make_cert(directory: Path, cn: str) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by `make test`"
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-keyout", str(key) + ".new",
                    "-out", str(cert) + ".new"], check=True, capture_output=True, timeout=60)
    Path(str(key) + ".new").replace(key)
    Path(str(cert) + ".new").replace(cert)
    return cert, key


def test_renewed_certificate_is_used_after_sighup(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = _make_cert(certs, "first.example.test")
    (tmp_path / "srv").mkdir()
    s = make_sub(tmp_path / "srv", extra=f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    s.srv.start()
    try:
        first = _cert_fingerprint(s.tls_port)
        _make_cert(certs, "second.example.test")
        assert s.srv.proc is not None
        s.srv.proc.send_signal(1)  # SIGHUP
        s.srv.wait_log("tls: certificate reloaded")
        second = _cert_fingerprint(s.tls_port)
        assert first != second
        # STARTTLS on 587 uses it too.
        with smtplib.SMTP("127.0.0.1", s.port, timeout=15) as c:
            c.starttls(context=insecure())
            assert c.sock is not None
            der = c.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
            assert hashlib.sha256(der).hexdigest() == second
    finally:
        s.srv.stop()


def test_brute_force_is_throttled_per_ip_without_locking_out_others(tmp_path: Path) -> None:
    s = make_sub(tmp_path, auth_toml="ip_max_failures = 4\naccount_ip_max_failures = 10\n")
    s.srv.start()
    try:
        with smtplib.SMTP_SSL("127.0.0.1", s.tls_port, timeout=15, context=insecure()) as c:
            c.ehlo("attacker.test")
            codes = []
            for i in range(6):  # one AUTH PLAIN per attempt (smtplib.login would try two mechanisms)
                try:
                    codes.append(c.docmd("AUTH", "PLAIN " + plain("alice@example.test", f"wrong-{i}"))[0])
                except smtplib.SMTPServerDisconnected:
                    codes.append(-1)
                    break
            # ip_max_failures = 4: three plain refusals, the fourth failure is refused and the
            # connection closed (RFC 4954 §6 535 5.7.8, then 421 4.7.0).
            assert codes == [535, 535, 535, 421, -1]
        s.srv.wait_log(r"failed login for alice@example\.test from 127\.0\.0\.1")
        # The same IP is refused for now, even with the right password...
        with smtplib.SMTP_SSL("127.0.0.1", s.tls_port, timeout=15, context=insecure()) as c:
            with pytest.raises((smtplib.SMTPAuthenticationError, smtplib.SMTPServerDisconnected)):
                c.login("alice@example.test", PASSWORD)
        # ...while alice on another address logs in.
        with smtplib.SMTP_SSL("127.0.0.1", s.tls_port, timeout=15, context=insecure(),
                              source_address=("127.0.0.2", 0)) as c:
            assert c.login("alice@example.test", PASSWORD)[0] == 235
    finally:
        s.srv.stop()


def test_rate_limit_messages_per_hour(tmp_path: Path) -> None:
    s = make_sub(tmp_path, extra="[submission]\nmessages_per_hour = 2\n")
    s.srv.start()
    try:
        with login(s) as c:
            for i in range(2):
                c.sendmail("alice@example.test", ["bob@example.test"], msg("alice@example.test", "bob@example.test", f"n{i}"))
            code, text = c.mail("alice@example.test")
            assert code == 450 and text.startswith(b"4.7.1")
    finally:
        s.srv.stop()


def test_swaks_with_starttls_and_auth(sub: Sub) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.fail("swaks is not installed (`make test` installs it)")
    tok = uuid.uuid4().hex
    res = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(sub.port), "--tls",
                          "--auth", "LOGIN", "--auth-user", "bob@example.test", "--auth-password", PASSWORD,
                          "--from", "bob@example.test", "--to", "alice@example.test",
                          "--header", f"Subject: swaks {tok}", "--timeout", "20"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "235 2.7.0" in res.stdout
    assert wait_token(sub.srv, "alice@example.test", tok)


def test_msmtp_sends_through_submission(sub: Sub, tmp_path: Path) -> None:
    msmtp = shutil.which("msmtp")
    if msmtp is None:
        pytest.fail("msmtp is not installed (`make test` installs it)")
    rc = tmp_path / "msmtprc"
    rc.write_text(f"account default\nhost 127.0.0.1\nport {sub.port}\ntls on\ntls_starttls on\n"
                  "tls_certcheck off\nauth on\nuser bob@example.test\n"
                  f"password {PASSWORD}\nfrom bob@example.test\n")
    rc.chmod(0o600)
    tok = uuid.uuid4().hex
    res = subprocess.run([msmtp, "-C", str(rc), "alice@example.test"],
                         input=f"From: bob@example.test\nSubject: msmtp {tok}\n\nhello\n", capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert wait_token(sub.srv, "alice@example.test", tok)
    # msmtp refuses to continue when the server will not take its From (sender binding).
    bad = subprocess.run([msmtp, "-C", str(rc), "--from", "alice@example.test", "alice@example.test"],
                         input="From: alice@example.test\nSubject: spoof\n\nx\n", capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "5.7.1" in bad.stderr
