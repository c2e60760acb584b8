"""Port 25 checks end to end: SPF, DKIM, DMARC, our own domains, DNS blocklists, DMARC reports.

Two real servers on loopback share one port number: ``mx`` (example.test, 127.0.0.2) checks
what arrives, ``rep`` (reports.test, 127.0.0.3) receives the aggregate reports ``mx`` sends
through its queue. A dnslib server publishes the sender domains' SPF, DKIM keys and DMARC
records; the client binds to 127.0.0.5 (the address the SPF records allow) or 127.0.0.6 (one
they do not), and signs with real keys (dkimpy). The delivered files are read for their
Authentication-Results and their folder.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import imaplib
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port
from tests.unit.dns.zone_server import ZoneServer
from tests.unit.mailauth.keys import rsa_key, sign

pytestmark = pytest.mark.integration

GOOD_IP = "127.0.0.5"  # allowed by every sender domain's SPF record
BAD_IP = "127.0.0.6"  # allowed by none
LISTED_IP = "127.0.0.7"  # in the blocklist zone
PASSWORD = "secret-pw-123"


def _zone() -> dict[str, list[tuple[str, str] | tuple[str, str, int]]]:
    key = rsa_key()[1]
    zone: dict[str, list[tuple[str, str] | tuple[str, str, int]]] = {
        "mx.example.test": [("A", "127.0.0.2")],
        "reports.test": [("MX", "10 mx.reports.test")],
        "mx.reports.test": [("A", "127.0.0.3")],
        # RFC 7489 §7.1: reports.test agrees to receive pass.test's reports
        "pass.test._report._dmarc.reports.test": [("TXT", "v=DMARC1")],
        # the DNS blocklist: 127.0.0.7 listed, with a reason
        "7.0.0.127.bl.test": [("A", "127.0.0.2"), ("TXT", "Listed for testing, see https://bl.test/")],
    }
    for name, policy in (("pass", "reject"), ("reject", "reject"), ("quar", "quarantine"), ("none", "none")):
        domain = f"{name}.test"
        zone[domain] = [("TXT", f"v=spf1 ip4:{GOOD_IP} -all")]
        zone[f"sel._domainkey.{domain}"] = [("TXT", key)]
        rua = "; rua=mailto:agg@reports.test" if name == "pass" else ""
        zone[f"_dmarc.{domain}"] = [("TXT", f"v=DMARC1; p={policy}{rua}")]
    return zone


@dataclass
class Net:
    mx: Server
    rep: Server
    dns: ZoneServer


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    dns = ZoneServer(_zone()).start()
    port = free_port("127.0.0.2")
    dns_toml = f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n'
    inbound = '[inbound]\ndnsbl = ["bl.test"]\n'
    imap = free_port("127.0.0.2")
    mx = Server(tmp_path_factory.mktemp("mx"), domains=["example.test"], hostname="mx.example.test",
                host="127.0.0.2", smtp_port=port, listen_toml=f'imap = ["127.0.0.2:{imap}"]',
                extra_toml=f"{dns_toml}{inbound}[delivery]\nremote_port = {port}\n"
                           "[auth]\nallow_plaintext_on_loopback = true\n")
    rep = Server(tmp_path_factory.mktemp("rep"), domains=["reports.test"], hostname="mx.reports.test",
                 host="127.0.0.3", smtp_port=port, extra_toml=f"{dns_toml}[inbound]\nreports = false\n")
    mx.add_user("bob@example.test", PASSWORD)
    rep.add_user("agg@reports.test")
    for s in (mx, rep):
        s.start()
    try:
        yield Net(mx, rep, dns)
    finally:
        for s in (mx, rep):
            s.stop()
        dns.stop()


def message(from_domain: str, token: str, *, signed: bool = True, extra: bytes = b"") -> bytes:
    msg = (f"From: Alice <alice@{from_domain}>\r\nTo: bob@example.test\r\nSubject: {token}\r\n"
           f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{token}@{from_domain}>\r\n").encode()
    msg += extra + b"\r\nHello Bob,\r\n\r\nthe body.\r\n"
    return sign(msg, from_domain) if signed else msg


def send(srv: Server, source: str, mail_from: str, msg: bytes) -> tuple[int, bytes]:
    """DATA from ``source``; the final reply (code, text)."""
    with smtplib.SMTP(srv.host, srv.smtp_port, source_address=(source, 0), timeout=30) as c:
        c.ehlo("client.test")
        c.mail(mail_from)
        code, text = c.rcpt("bob@example.test")
        assert code == 250, text
        code, text = c.data(msg)
        return code, text


def find(srv: Server, token: str, folder: str = "", timeout: float = 20.0) -> bytes | None:
    return srv.find_message("bob@example.test", token, folder, timeout)


def fields(data: bytes, name: str) -> list[str]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    return [" ".join(v.split()) for v in msg.get_all(name, [])]


def test_spf_dkim_dmarc_pass_reach_inbox_with_authentication_results(net: Net) -> None:
    code, _ = send(net.mx, GOOD_IP, "alice@pass.test", message("pass.test", "tok-pass"))
    assert code == 250
    data = find(net.mx, "tok-pass")
    assert data is not None
    ar = fields(data, "Authentication-Results")
    assert len(ar) == 1
    assert ar[0].startswith("mx.example.test;")
    assert "spf=pass smtp.mailfrom=pass.test" in ar[0]
    assert "dkim=pass header.d=pass.test header.s=sel header.a=rsa-sha256" in ar[0]
    assert "dmarc=pass (p=reject) header.from=pass.test" in ar[0]
    assert "arc=none" in ar[0]
    spf = fields(data, "Received-SPF")
    assert len(spf) == 1 and spf[0].startswith("pass ") and f"client-ip={GOOD_IP};" in spf[0]
    # at the top, above our Received:
    assert data.index(b"Authentication-Results:") < data.index(b"Received-SPF:") < data.index(b"Received:")
    line = net.mx.wait_log(r"received client=127\.0\.0\.5 from=<alice@pass\.test>.*$").group(0)
    assert "spf=pass dkim=pass dmarc=pass" in line


def test_dmarc_reject_refuses_550_and_queues_nothing(net: Net) -> None:
    code, text = send(net.mx, BAD_IP, "alice@reject.test", message("reject.test", "tok-reject", signed=False))
    assert code == 550 and text.startswith(b"5.7.1") and b"DMARC" in text
    assert find(net.mx, "tok-reject", timeout=1.0) is None
    line = net.mx.wait_log(r"reject client=127\.0\.0\.6 stage=DATA from=<alice@reject\.test>.*$").group(0)
    assert "spf=fail" in line and "dmarc=fail" in line


def test_dmarc_pass_by_dkim_alone_from_an_address_spf_refuses(net: Net) -> None:
    code, _ = send(net.mx, BAD_IP, "alice@reject.test", message("reject.test", "tok-dkimonly"))
    assert code == 250
    data = find(net.mx, "tok-dkimonly")
    assert data is not None
    ar = fields(data, "Authentication-Results")[0]
    assert "spf=fail" in ar and "dkim=pass" in ar and "dmarc=pass" in ar


def test_dmarc_quarantine_goes_to_junk(net: Net) -> None:
    code, _ = send(net.mx, BAD_IP, "alice@quar.test", message("quar.test", "tok-quar", signed=False))
    assert code == 250
    data = find(net.mx, "tok-quar", folder="Junk")
    assert data is not None
    assert "dmarc=fail (p=quarantine) header.from=quar.test" in fields(data, "Authentication-Results")[0]
    assert find(net.mx, "tok-quar", timeout=0.5) is None  # not in INBOX
    assert (net.mx.maildir("bob@example.test") / ".Junk" / "maildirfolder").exists()
    imap_port = int(net.mx.listen_toml.rsplit(":", 1)[1].rstrip('"]'))
    with imaplib.IMAP4("127.0.0.2", imap_port, timeout=30) as c:  # the IMAP side sees it there
        c.login("bob@example.test", PASSWORD)
        _, listing = c.list()
        junk = [line for line in listing if isinstance(line, bytes) and line.endswith(b' Junk')]
        assert junk and b"\\Junk" in junk[0], listing
        typ, count = c.select("Junk", readonly=True)
        assert typ == "OK" and int(count[0] or 0) >= 1
        typ, found = c.search(None, "SUBJECT", "tok-quar")
        assert typ == "OK" and found[0].split()


def test_dmarc_none_failing_is_delivered_and_says_so(net: Net) -> None:
    code, _ = send(net.mx, BAD_IP, "alice@none.test", message("none.test", "tok-none", signed=False))
    assert code == 250
    data = find(net.mx, "tok-none")
    assert data is not None
    ar = fields(data, "Authentication-Results")[0]
    assert "spf=fail" in ar and "dkim=none" in ar and "dmarc=fail (p=none) header.from=none.test" in ar


def test_our_own_domain_spoofed_from_outside_is_refused_without_a_record(net: Net) -> None:
    code, text = send(net.mx, GOOD_IP, "alice@pass.test", message("example.test", "tok-spoof", signed=False))
    assert code == 550 and text.startswith(b"5.7.1")
    assert find(net.mx, "tok-spoof", timeout=1.0) is None


def test_forged_authentication_results_with_our_id_are_removed(net: Net) -> None:
    forged = (b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=x@none.test; dmarc=pass\r\n"
              b"Authentication-Results: other.example; spf=pass smtp.mailfrom=x@none.test\r\n")
    code, _ = send(net.mx, GOOD_IP, "alice@pass.test", message("pass.test", "tok-forged", extra=forged))
    assert code == 250
    data = find(net.mx, "tok-forged")
    assert data is not None
    ar = fields(data, "Authentication-Results")
    ours = [a for a in ar if a.startswith("mx.example.test;")]
    assert len(ours) == 1 and "dkim=pass" in ours[0]  # the forgery is gone; ours (DKIM still passes)
    assert any(a.startswith("other.example;") for a in ar)


def test_dnsbl_listed_client_is_refused_before_mail_naming_the_zone(net: Net) -> None:
    with smtplib.SMTP(net.mx.host, net.mx.smtp_port, source_address=(LISTED_IP, 0), timeout=30) as c:
        code, text = c.ehlo("listed.test")
        assert code == 554
        assert text.startswith(b"5.7.1") and b"bl.test" in text and b"Listed for testing" in text
        code, _ = c.mail("alice@pass.test")
        assert code == 503  # no transaction without a greeting
    line = net.mx.wait_log(r"reject client=127\.0\.0\.7 stage=CONNECT.*$").group(0)
    assert "bl.test" in line


def test_aggregate_report_is_sent_by_reports_send_and_received_by_the_other_server(net: Net) -> None:
    code, _ = send(net.mx, GOOD_IP, "alice@pass.test", message("pass.test", "tok-report"))
    assert code == 250
    assert find(net.mx, "tok-report") is not None
    # The evaluation reaches its file within inbound.reports.FLUSH_DELAY (rule 1): wait for it.
    dmarc_dir = net.mx.data_dir / "reports" / "dmarc"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            GOOD_IP.encode() in p.read_bytes() for p in dmarc_dir.glob("*.jsonl")):
        time.sleep(0.05)
    out = net.mx.cli("reports", "send").stdout
    assert "report(s) queued" in out and not out.startswith("0 ")
    msgs = net.rep.wait_messages("agg@reports.test", 1, timeout=30)
    assert msgs, net.mx.log[-3000:]
    msg = email.message_from_bytes(msgs[0], policy=email.policy.default)
    assert msg["From"] == "noreply-dmarc@mx.example.test"
    assert "Report Domain: pass.test" in msg["Subject"]
    parts = [p for p in msg.iter_attachments() if p.get_content_type() == "application/gzip"]
    assert len(parts) == 1 and parts[0].get_filename().startswith("mx.example.test!pass.test!")
    xml = gzip.decompress(parts[0].get_content()).decode()
    assert "<domain>pass.test</domain>" in xml and f"<source_ip>{GOOD_IP}</source_ip>" in xml
    assert "<header_from>pass.test</header_from>" in xml and "<p>reject</p>" in xml
    # nothing left to send
    assert net.mx.cli("reports", "send").stdout.strip().endswith("0 report(s) queued")


def test_trusted_network_is_not_checked(tmp_path: Path, net: Net) -> None:
    srv = Server(tmp_path, domains=["example.test"], host="127.0.0.2",
                 extra_toml=f'[dns]\nnameservers = ["127.0.0.1:{net.dns.port}"]\n'
                            f'[inbound]\ntrusted_networks = ["{BAD_IP}/32"]\n')
    srv.add_user("bob@example.test")
    srv.start()
    try:
        code, _ = send(srv, BAD_IP, "alice@reject.test", message("reject.test", "tok-trusted", signed=False))
        assert code == 250
        data = find(srv, "tok-trusted")
        assert data is not None and not fields(data, "Authentication-Results")
    finally:
        srv.stop()


def test_checks_run_in_smtp_worker_processes(tmp_path: Path, net: Net) -> None:
    srv = Server(tmp_path, domains=["example.test"], host="127.0.0.2",
                 extra_toml=f'[dns]\nnameservers = ["127.0.0.1:{net.dns.port}"]\n[inbound]\n'
                            "[smtp]\nprocesses = 2\n")
    srv.add_user("bob@example.test")
    srv.start()
    try:
        srv.wait_log(r"smtp worker 1.*|Ready", timeout=15)
        for i in range(6):  # both processes take connections: every message is checked
            code, _ = send(srv, BAD_IP, "alice@reject.test", message("reject.test", f"tok-w{i}", signed=False))
            assert code == 550
            code, _ = send(srv, GOOD_IP, "alice@pass.test", message("pass.test", f"tok-wp{i}"))
            assert code == 250
        data = find(srv, "tok-wp5")
        assert data is not None and "dmarc=pass" in fields(data, "Authentication-Results")[0]
        pids = set(srv.wait_log(r"pigeon\[(\d+)\] INFO pigeon\.mail: \S+ received").groups())
        assert pids
    finally:
        srv.stop()


def test_a_large_signed_message_is_checked_from_its_queue_file_and_kept_whole(net: Net) -> None:
    body = b"".join(b"line %07d of a large message\r\n" % i for i in range(20000))  # 640 KB, past memory
    msg = (b"From: Alice <alice@pass.test>\r\nTo: bob@example.test\r\nSubject: tok-large\r\n"
           b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <tok-large@pass.test>\r\n\r\n" + body)
    code, _ = send(net.mx, GOOD_IP, "alice@pass.test", sign(msg, "pass.test"))
    assert code == 250
    data = find(net.mx, "tok-large")
    assert data is not None
    assert "dkim=pass" in fields(data, "Authentication-Results")[0]
    assert data.endswith(body.replace(b"\r\n", b"\n"))


def test_many_signatures_are_bounded_and_never_crash(net: Net) -> None:
    bogus = b"".join(b"DKIM-Signature: v=1; a=rsa-sha256; d=pass.test; s=nokey%d; h=from; bh=AAAA; b=BBBB\r\n" % i
                     for i in range(500))
    msg = bogus + message("pass.test", "tok-many", signed=False)
    code, _ = send(net.mx, GOOD_IP, "alice@pass.test", msg)
    assert code == 250  # SPF passes and aligns: DMARC passes without DKIM
    data = find(net.mx, "tok-many")
    assert data is not None
    ar = fields(data, "Authentication-Results")[0]
    assert "dmarc=pass" in ar and ar.count("dkim=") <= 5
