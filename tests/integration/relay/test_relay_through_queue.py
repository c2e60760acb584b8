"""Mail to other domains through the whole server: queue → MX routing → SMTP client → peer.

Three real ``pigeon serve`` processes on their own loopback addresses, all listening on one
port (the ``[delivery] remote_port`` of the sender), with the zones served by a real DNS server
on loopback (dnslib):

- ``a.test`` (127.0.0.5): the sending site; alice@a.test, postmaster; mail enters it with
  ``pigeon sendmail`` or through an alias that points to another domain.
- ``dest.test`` primary MX mx1.dest.test (127.0.0.2) with bob@dest.test, and backup MX
  backup.dest.test (127.0.0.6) with ``relay_domains = ["dest.test"]``.
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import PIGEON, RawClient, Server, free_port, queued_id
from tests.unit.dns.zone_server import ZoneServer

pytestmark = pytest.mark.integration


@dataclass
class Net:
    sender: Server
    primary: Server
    backup: Server
    dns: ZoneServer
    port: int


def _queue_toml(dns: ZoneServer, port: int, retry: str = "1s", lifetime: str = "5d") -> str:
    host, dport = dns.endpoint
    return (f'[dns]\nnameservers = ["{host}:{dport}"]\n'
            f"[delivery]\nremote_port = {port}\n"
            f'[queue]\nretry_schedule = ["{retry}"]\nmax_lifetime = "{lifetime}"\njitter = 0.0\n')


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    port = free_port("127.0.0.2")
    zone = {
        "a.test": [("A", "127.0.0.5")],
        "dest.test": [("MX", "10 mx1.dest.test"), ("MX", "20 backup.dest.test")],
        "mx1.dest.test": [("A", "127.0.0.2")],
        "backup.dest.test": [("A", "127.0.0.6")],
        "nomail.test": [("MX", "0 .")],
        "down.test": [("MX", "10 mx.down.test")],
        "mx.down.test": [("A", "127.0.0.4")],  # nothing listens there
    }
    dns = ZoneServer(zone).start()
    servers: list[Server] = []

    def make(name: str, host: str, hostname: str, domains: list[str], extra: str = "") -> Server:
        d = tmp_path / name
        d.mkdir()
        s = Server(d, domains=domains, hostname=hostname, host=host, smtp_port=port,
                   extra_toml=extra + _queue_toml(dns, port, lifetime="3s" if name == "sender" else "5d"))
        servers.append(s)
        return s

    try:
        sender = make("sender", "127.0.0.5", "mx.a.test", ["a.test"])
        sender.add_user("alice@a.test")
        sender.cli("alias", "add", "fwd@a.test", "bob@dest.test")
        sender.cli("alias", "add", "dead@a.test", "x@nomail.test")
        primary = make("primary", "127.0.0.2", "mx1.dest.test", ["dest.test"])
        primary.add_user("bob@dest.test")
        backup = make("backup", "127.0.0.6", "backup.dest.test", ["backup.test"],
                      extra='relay_domains = ["dest.test"]\n')
        backup.add_user("admin@backup.test")
        yield Net(sender, primary, backup, dns, port)
    finally:
        for s in servers:
            s.stop()
        dns.stop()


def sendmail(srv: Server, *args: str, message: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*PIGEON, "--config", str(srv.config_path), "sendmail", *args],
                          input=message, capture_output=True, env=srv.env(), timeout=60)


def parsed(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def dsn_status(raw: bytes) -> list[str]:
    """The Status: fields of a DSN's machine-readable part (RFC 3464 §2.3.4)."""
    return [line.split(":", 1)[1].strip() for line in raw.decode(errors="replace").splitlines()
            if line.lower().startswith("status:")]


def test_sendmail_to_another_domain_goes_to_its_best_mx(net: Net) -> None:
    net.sender.start()
    net.primary.start()
    msg = b"From: alice@a.test\nTo: bob@dest.test\nSubject: over the wire\n\nhello bob\n"
    res = sendmail(net.sender, "-f", "alice@a.test", "bob@dest.test", message=msg)
    assert res.returncode == 0, res.stderr
    got = net.primary.wait_messages("bob@dest.test", 1)
    assert len(got) == 1
    m = parsed(got[0])
    assert m["Subject"] == "over the wire"
    assert m["Return-Path"] == "<alice@a.test>"
    # Both hops left a Received: line; the sender's queue is empty again.
    assert len(m.get_all("Received") or []) == 2
    net.sender.wait_log(rf"delivered to=<bob@dest.test> relay=mx1\.dest\.test\[127\.0\.0\.2\]:{net.port}")
    assert net.sender.wait_queue(lambda q: not q) == []


def test_alias_to_another_domain_is_relayed_and_one_envelope_per_destination(net: Net) -> None:
    net.sender.start()
    net.primary.start()
    with RawClient(net.sender.host, net.sender.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<someone@elsewhere.test>")[0] == 250
        assert c.cmd("RCPT TO:<fwd@a.test>")[0] == 250
        # Port 25 takes mail for its own domains only (no relaying for strangers).
        code, lines = c.cmd("RCPT TO:<bob@dest.test>")
        assert code == 554 and "5.7.1" in lines[0]
        code, _ = c.data(b"Subject: via alias\r\n\r\nforwarded\r\n")
        assert code == 250
    got = net.primary.wait_messages("bob@dest.test", 1)
    assert len(got) == 1 and parsed(got[0])["Subject"] == "via alias"


def test_backup_mx_holds_mail_while_primary_is_down_and_passes_it_on(net: Net) -> None:
    net.backup.start()
    with RawClient(net.backup.host, net.backup.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<carol@a.test>")[0] == 250
        assert c.cmd("RCPT TO:<bob@dest.test>")[0] == 250  # relay_domains: accepted here
        code, lines = c.data(b"Subject: held by the backup\r\n\r\nwait for it\r\n")
        assert code == 250
        qid = queued_id(lines)
    # The backup only tries MX hosts better than itself (RFC 5321 §5.1): the primary, down.
    q = net.backup.wait_queue(lambda q: bool(q) and q[0].get("state") == "deferred")
    assert [m["id"] for m in q] == [qid]
    show = net.backup.queue_show(qid)
    history = str(show)
    assert "mx1.dest.test" in history and "backup.dest.test[" not in history
    net.primary.start()
    net.backup.cli("queue", "flush")
    got = net.primary.wait_messages("bob@dest.test", 1)
    assert len(got) == 1 and parsed(got[0])["Subject"] == "held by the backup"
    assert net.backup.wait_queue(lambda q: not q) == []


def test_null_mx_fails_at_once_with_a_dsn_to_the_sender(net: Net) -> None:
    net.sender.start()
    msg = b"From: alice@a.test\nSubject: to nowhere\nMessage-ID: <nowhere-1@a.test>\n\nbody\n"
    assert sendmail(net.sender, "-f", "alice@a.test", "x@nomail.test", message=msg).returncode == 0
    got = net.sender.wait_messages("alice@a.test", 1)
    assert len(got) == 1
    dsn = parsed(got[0])
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["From"].addresses[0].username.upper() == "MAILER-DAEMON"
    assert dsn["Return-Path"] == "<>"  # RFC 3464 §2: DSNs have the null envelope sender
    assert dsn_status(got[0]) == ["5.1.10"]
    assert b"nowhere-1@a.test" in got[0]  # the original headers come back


def test_expiry_fails_a_deferred_recipient_with_a_dsn(net: Net) -> None:
    net.sender.start()  # max_lifetime 3 s, retry every 1 s
    msg = b"From: alice@a.test\nSubject: never arrives\n\nbody\n"
    assert sendmail(net.sender, "-f", "alice@a.test", "bob@down.test", message=msg).returncode == 0
    got = net.sender.wait_messages("alice@a.test", 1, timeout=20)
    assert len(got) == 1
    status = dsn_status(got[0])
    assert len(status) == 1 and status[0].startswith("5.")  # expired: a permanent failure now
    text = got[0].decode(errors="replace")
    assert "bob@down.test" in text and "expired" in text.lower()


def test_a_bounce_that_cannot_be_returned_goes_to_the_postmaster(net: Net) -> None:
    net.sender.start()
    with RawClient(net.sender.host, net.sender.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<>")[0] == 250
        assert c.cmd("RCPT TO:<dead@a.test>")[0] == 250  # alias to a null-MX domain
        assert c.data(b"Subject: a bounce itself\r\n\r\nx\r\n")[0] == 250
    # Never bounce a bounce (RFC 5321 §6.1 / RFC 3464): the postmaster (alice, the first user)
    # gets the double bounce.
    got = net.sender.wait_messages("alice@a.test", 1)
    assert len(got) == 1
    assert "x@nomail.test" in got[0].decode(errors="replace")
    time.sleep(0.5)
    assert len(net.sender.messages("alice@a.test")) == 1


def test_smarthost_with_tls_and_login(tmp_path: Path) -> None:
    """[delivery] smarthost: everything goes to one host, over TLS, after AUTH (RFC 4954)."""
    sub_port = free_port("127.0.0.2")
    (tmp_path / "provider").mkdir()
    provider = Server(tmp_path / "provider", domains=["dest.test"], hostname="smtp.provider.test",
                      host="127.0.0.2", listen_toml=f'submission = ["127.0.0.2:{sub_port}"]')
    (tmp_path / "site").mkdir()
    secret = tmp_path / "site" / "smarthost.pw"
    secret.write_text("relay-pw-123456\n")
    secret.chmod(0o600)
    site = Server(tmp_path / "site", domains=["a.test"], hostname="mx.a.test", host="127.0.0.5",
                  extra_toml=f'[delivery]\nsmarthost = "127.0.0.2:{sub_port}"\nsmarthost_user = "relay@dest.test"\n'
                             f'smarthost_password_file = "{secret}"\nsmarthost_tls_verify = false\n')
    try:
        provider.add_user("bob@dest.test")
        provider.add_user("relay@dest.test", "relay-pw-123456")
        # The provider holds its customer to its addresses: the site's domain is granted.
        provider.cli("user", "identity", "relay@dest.test", "--set", "@a.test")
        site.add_user("alice@a.test")
        provider.start()
        site.start()
        msg = b"From: alice@a.test\nSubject: via the smarthost\n\nhello\n"
        assert sendmail(site, "-f", "alice@a.test", "bob@dest.test", message=msg).returncode == 0
        got = provider.wait_messages("bob@dest.test", 1)
        assert len(got) == 1
        m = parsed(got[0])
        assert m["Subject"] == "via the smarthost"
        received = " ".join(str(r) for r in m.get_all("Received") or [])
        assert "ESMTPSA" in received and "TLSv1." in received
        site.wait_log(r"delivered to=<bob@dest\.test> relay=127\.0\.0\.2")
    finally:
        site.stop()
        provider.stop()


def test_smarthost_with_a_wrong_password_defers(tmp_path: Path) -> None:
    sub_port = free_port("127.0.0.2")
    (tmp_path / "provider").mkdir()
    provider = Server(tmp_path / "provider", domains=["dest.test"], hostname="smtp.provider.test",
                      host="127.0.0.2", listen_toml=f'submission = ["127.0.0.2:{sub_port}"]')
    (tmp_path / "site").mkdir()
    secret = tmp_path / "site" / "smarthost.pw"
    secret.write_text("not-the-password\n")
    site = Server(tmp_path / "site", domains=["a.test"], hostname="mx.a.test", host="127.0.0.5",
                  extra_toml=f'[delivery]\nsmarthost = "127.0.0.2:{sub_port}"\nsmarthost_user = "relay@dest.test"\n'
                             f'smarthost_password_file = "{secret}"\nsmarthost_tls_verify = false\n')
    try:
        provider.add_user("relay@dest.test", "relay-pw-123456")
        site.add_user("alice@a.test")
        provider.start()
        site.start()
        assert sendmail(site, "-f", "alice@a.test", "bob@dest.test", message=b"Subject: x\n\nx\n").returncode == 0
        q = site.wait_queue(lambda q: bool(q) and q[0]["state"] == "deferred")
        assert q and "4.7.0" in q[0]["recipients"][0]["last_reply"]  # kept, not bounced
        assert "login as relay@dest.test refused: 535 5.7.8" in q[0]["recipients"][0]["last_reply"]
    finally:
        site.stop()
        provider.stop()


def _cert_for(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate naming ``name`` (it is its own trust anchor in the test)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("cert_name, delivered", [("mx1.dest.test", True), ("wrong.example", False)])
def test_tls_policy_verify(tmp_path: Path, cert_name: str, delivered: bool) -> None:
    """[delivery.tls_policy] "dest.test" = "verify": the MX must show a certificate for its name."""
    port = free_port("127.0.0.2")
    cert, key = _cert_for(tmp_path / "certs", cert_name)
    with ZoneServer({"dest.test": [("MX", "10 mx1.dest.test")], "mx1.dest.test": [("A", "127.0.0.2")]}) as dns:
        host, dport = dns.endpoint
        (tmp_path / "p").mkdir()
        primary = Server(tmp_path / "p", domains=["dest.test"], hostname="mx1.dest.test", host="127.0.0.2",
                         smtp_port=port, extra_toml=f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
        (tmp_path / "s").mkdir()
        sender_srv = Server(tmp_path / "s", domains=["a.test"], hostname="mx.a.test", host="127.0.0.5",
                            extra_toml=f'[dns]\nnameservers = ["{host}:{dport}"]\n'
                                       f'[delivery]\nremote_port = {port}\ntls_ca_file = "{cert}"\n'
                                       '[delivery.tls_policy]\n"dest.test" = "verify"\n')
        try:
            primary.add_user("bob@dest.test")
            sender_srv.add_user("alice@a.test")
            primary.start()
            sender_srv.start()
            assert sendmail(sender_srv, "-f", "alice@a.test", "bob@dest.test",
                            message=b"Subject: verified\n\nx\n").returncode == 0
            if delivered:
                assert len(primary.wait_messages("bob@dest.test", 1)) == 1
                sender_srv.wait_log(r"delivered to=<bob@dest\.test> relay=mx1\.dest\.test")
            else:
                q = sender_srv.wait_queue(lambda q: bool(q) and q[0]["state"] == "deferred")
                assert "4.7.5" in q[0]["recipients"][0]["last_reply"]  # never sent unverified
                assert primary.messages("bob@dest.test") == []
        finally:
            sender_srv.stop()
            primary.stop()
