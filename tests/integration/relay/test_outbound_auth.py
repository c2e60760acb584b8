"""Issue 17 across real servers: DKIM signing, ARC sealing and SRS, verified by dkimpy at the
receiving side, with the keys published by ``pigeon dns`` in a real DNS server on loopback.

The topology is test_relay_through_queue's (``net``): a.test (127.0.0.5) sends, dest.test's
primary MX (127.0.0.2) receives; the scripted peer of test_relay_scenarios (127.0.0.7, no
8BITMIME) receives for old.test, so an 8-bit message is converted to 7-bit on the way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import dkim
import dns.nameserver
import dns.resolver
import pytest

from tests.integration.harness import RawClient
from tests.integration.relay.test_relay_scenarios import PEER_HOST, ThreadedPeer
from tests.integration.relay.test_relay_through_queue import Net, net, parsed, sendmail
from tests.unit.dns.zone_server import ZoneServer
from tests.unit.relay.peer import Script

pytestmark = pytest.mark.integration
__all__ = ["net"]

_LINE = re.compile(r"^(\S+)\s+IN\s+(\S+)\s+(.*)$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def load_zone(dns_server: ZoneServer, text: str) -> int:
    """The zone-file lines of ``pigeon dns`` into the fake DNS; returns how many records."""
    n = 0
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        owner, rtype, data = m.group(1).rstrip(".").lower(), m.group(2), m.group(3)
        if rtype == "TXT":
            value = "".join(re.sub(r"\\(.)", r"\1", s) for s in _QUOTED.findall(data))
        else:
            value = " ".join(p if p == "." else p.rstrip(".") for p in data.split())
        dns_server.zone.setdefault(owner, []).append((rtype, value))
        n += 1
    return n


def dnsfunc(dns_server: ZoneServer) -> object:
    """dkimpy's DNS callback, asking the fake DNS over the wire (dnspython)."""
    host, port = dns_server.endpoint
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [dns.nameserver.Do53Nameserver(host, port)]

    def get_txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = r.resolve(name.decode(), "TXT")
        except dns.exception.DNSException:
            return None
        return b"".join(answer[0].strings)

    return get_txt


@pytest.fixture
def published(net: Net) -> Iterator[Net]:
    """The sender's records (MX, SPF, DKIM keys, DMARC...) published by its own `pigeon dns`."""
    out = net.sender.cli("dns", "a.test").stdout
    assert load_zone(net.dns, out) >= 10
    net.dns.zone["mx.a.test"] = [("A", "127.0.0.5")]
    yield net


@pytest.fixture
def old_peer(net: Net) -> Iterator[ThreadedPeer]:
    net.dns.zone["old.test"] = [("MX", "10 mx.old.test")]
    net.dns.zone["mx.old.test"] = [("A", PEER_HOST)]
    peer = ThreadedPeer(Script(extensions=("PIPELINING", "SIZE 10000000", "ENHANCEDSTATUSCODES")), net.port).start()
    try:
        yield peer
    finally:
        peer.stop()


def _verify_both(raw: bytes, dns_server: ZoneServer) -> list[bool]:
    d = dkim.DKIM(raw)
    count = len(re.findall(rb"^DKIM-Signature:", raw, re.MULTILINE | re.IGNORECASE))
    return [bool(d.verify(idx=i, dnsfunc=dnsfunc(dns_server))) for i in range(count)]


def _strip_delivery_headers(raw: bytes) -> bytes:
    """The message as it arrived: without the receiver's Return-Path/Delivered-To/Received, CRLF."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    while data.startswith((b"Return-Path:", b"Delivered-To:", b"Received:")):
        end = data.index(b"\r\n")
        while data[end + 2:end + 3] in (b" ", b"\t"):
            end = data.index(b"\r\n", end + 2)
        data = data[end + 2:]
    return data


def test_submitted_mail_is_signed_with_both_keys_and_verifies_at_the_receiver(published: Net) -> None:
    net = published
    net.sender.start()
    net.primary.start()
    msg = b"From: Alice <alice@a.test>\nTo: bob@dest.test\nSubject: signed\n\nhello bob\n"
    assert sendmail(net.sender, "-f", "alice@a.test", "bob@dest.test", message=msg).returncode == 0
    [raw] = net.primary.wait_messages("bob@dest.test", 1)
    got = _strip_delivery_headers(raw)
    assert got.count(b"DKIM-Signature:") == 2
    assert b"a=ed25519-sha256" in got and b"a=rsa-sha256" in got and b"d=a.test" in got
    assert _verify_both(got, net.dns) == [True, True]
    assert b"Message-ID:" in got  # the fix-ups came before the signature and are covered by it


def test_signature_still_verifies_after_the_7bit_conversion(published: Net, old_peer: ThreadedPeer) -> None:
    net = published
    net.sender.start()
    text = "Grüße aus Köln — ça va? 日本語\n"
    msg = ("From: alice@a.test\nTo: dan@old.test\nSubject: 8bit\nMIME-Version: 1.0\n"
           "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n" + text).encode()
    assert sendmail(net.sender, "-f", "alice@a.test", "dan@old.test", message=msg).returncode == 0
    net.sender.wait_log(r"delivered to=<dan@old\.test>")
    [tx] = old_peer.peer.received
    assert max(tx.data) < 128  # converted on the way
    assert b"Content-Transfer-Encoding: quoted-printable" in tx.data
    assert _verify_both(tx.data, net.dns) == [True, True]


def _forward(net: Net, sender: str, rcpt: str, body: bytes) -> None:
    with RawClient(net.sender.host, net.sender.smtp_port) as c:
        c.greet("mail.dest.test")
        assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        assert c.data(body)[0] == 250


def test_forwarded_mail_gets_srs_and_an_arc_seal_and_a_bounce_finds_its_way_back(published: Net) -> None:
    net = published
    net.primary.add_user("carol@dest.test")
    net.sender.start()
    net.primary.start()
    body = (b"Authentication-Results: mx.a.test; spf=pass smtp.mailfrom=dest.test\r\n"
            b"From: carol@dest.test\r\nTo: fwd@a.test\r\nSubject: forward me\r\n\r\nvia the alias\r\n")
    _forward(net, "carol@dest.test", "fwd@a.test", body)
    [raw] = net.primary.wait_messages("bob@dest.test", 1)
    return_path = re.search(rb"^Return-Path: <([^>]*)>", raw, re.MULTILINE)
    assert return_path is not None
    srs = return_path.group(1).decode()
    assert re.fullmatch(r"SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=dest\.test=carol@a\.test", srs), srs
    got = _strip_delivery_headers(raw)
    assert b"DKIM-Signature" not in got  # a stranger's mail is never signed as ours
    result, _, reason = dkim.arc_verify(got, dnsfunc=dnsfunc(net.dns))
    assert result == b"pass", reason
    assert re.search(rb"ARC-Authentication-Results: i=1; mx\.a\.test;\s+spf=pass", got)
    assert "srs: sender <carol@dest.test> rewritten" in net.sender.log
    # The receiver bounces to the SRS address: a.test decodes it and passes it to carol.
    bounce = b"From: MAILER-DAEMON@mx1.dest.test\r\nSubject: Undelivered\r\n\r\nyour mail bounced\r\n"
    with RawClient(net.sender.host, net.sender.smtp_port) as c:
        c.greet("mx1.dest.test")
        assert c.cmd("MAIL FROM:<>")[0] == 250
        assert c.cmd(f"RCPT TO:<{srs}>")[0] == 250
        assert c.data(bounce)[0] == 250
    [back] = net.primary.wait_messages("carol@dest.test", 1)
    assert b"your mail bounced" in back and b"Return-Path: <>" in back


def test_arc_seal_verifies_after_the_7bit_conversion(published: Net, old_peer: ThreadedPeer) -> None:
    net = published
    net.sender.cli("alias", "add", "old@a.test", "dan@old.test")
    net.sender.start()
    body = ("From: carol@dest.test\r\nTo: old@a.test\r\nSubject: 8bit forward\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße — forwarded\r\n").encode()
    _forward(net, "carol@dest.test", "old@a.test", body)
    net.sender.wait_log(r"delivered to=<dan@old\.test>")
    [tx] = old_peer.peer.received
    assert max(tx.data) < 128 and tx.mail.startswith("MAIL FROM:<SRS0=")
    result, _, reason = dkim.arc_verify(tx.data, dnsfunc=dnsfunc(net.dns))
    assert result == b"pass", reason


@pytest.mark.parametrize("local", [
    "SRS0=AAAA=AA=dest.test=carol",  # forged hash
    "SRS0=broken",  # malformed
    "SRS1=XXXX=other.test",  # malformed SRS1
])
def test_bad_srs_addresses_are_refused_with_a_log_line(published: Net, local: str) -> None:
    net = published
    net.sender.start()
    with RawClient(net.sender.host, net.sender.smtp_port) as c:
        c.greet()
        assert c.cmd("MAIL FROM:<>")[0] == 250
        code, lines = c.cmd(f"RCPT TO:<{local}@a.test>")
        assert code == 550 and lines[0].startswith("5.7.1"), lines
        assert c.cmd("QUIT")[0] == 221
    net.sender.wait_log(rf"srs: RCPT <{re.escape(local)}@a\.test> from 127\.0\.0\.\d+ refused")
    assert net.sender.proc is not None and net.sender.proc.poll() is None  # still running


def test_pigeon_dns_check_passes_on_the_published_zone_and_fails_on_a_broken_record(published: Net) -> None:
    net = published
    ok = net.sender.cli("dns", "a.test", "--check")
    assert ok.returncode == 0, ok.stdout
    lines = ok.stdout.splitlines()
    assert any(line.startswith("ok") and "202" in line and "_domainkey.a.test." in line for line in lines)
    assert all(line.startswith("ok") for line in lines), ok.stdout
    # Break the RSA key record: its p= no longer matches the key.
    owner = next(name for name in net.dns.zone if re.fullmatch(r"\d{6}r\._domainkey\.a\.test", name))
    rtype, value = net.dns.zone[owner][0][:2]
    net.dns.zone[owner] = [(rtype, value[:-8] + "AAAAAAA=")]
    del net.dns.zone["_dmarc.a.test"]
    bad = net.sender.cli("dns", "a.test", "--check", check=False)
    assert bad.returncode == 1
    assert re.search(rf"^differs\s+{re.escape(owner)}\. TXT \(required\)", bad.stdout, re.MULTILINE), bad.stdout
    assert re.search(r"^missing\s+_dmarc\.a\.test\. TXT \(required\): found nothing", bad.stdout, re.MULTILINE)


def test_forwards_accepted_by_worker_processes_get_srs_and_arc_too(published: Net) -> None:
    """With ``[smtp] processes``, a worker relays the mail it accepted from its own journal:
    with the server's outbound stage (SRS, ARC), whichever process took the connection."""
    net = published
    net.sender.extra_toml += "[smtp]\nprocesses = 3\n"
    net.sender.write_config()
    net.sender.start()
    net.primary.start()
    count = 9
    for i in range(count):
        body = (f"From: carol@dest.test\r\nTo: fwd@a.test\r\nSubject: forward {i}\r\n\r\nvia the alias\r\n").encode()
        _forward(net, "carol@dest.test", "fwd@a.test", body)
    received = net.primary.wait_messages("bob@dest.test", count)
    for raw in received:
        return_path = re.search(rb"^Return-Path: <(SRS0=[^>]*)>", raw, re.MULTILINE)
        assert return_path is not None, raw[:300]
        result, _, reason = dkim.arc_verify(_strip_delivery_headers(raw), dnsfunc=dnsfunc(net.dns))
        assert result == b"pass", reason
    pids = set(re.findall(r"pigeon\[(\d+)\] INFO pigeon\.mail: \S+ received", net.sender.log))
    assert len(pids) >= 2, pids  # the server and at least one worker accepted some of them
