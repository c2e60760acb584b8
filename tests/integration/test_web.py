"""The web endpoint on loopback: autoconfig, autodiscover, the Apple profile, the MTA-STS policy,
/metrics and /healthz of the real server (issue #19, "One small web endpoint")."""

from __future__ import annotations

import hashlib
import http.client
import os
import plistlib
import re
import smtplib
import ssl
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Server, free_port

pytestmark = pytest.mark.integration

USER = "alice@example.test"


def _get(port: int, path: str, host: str = "127.0.0.1", method: str = "GET", body: bytes | None = None,
         secure: bool = False) -> tuple[int, dict[str, str], bytes]:
    if secure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def web(tmp_path: Path) -> object:
    ports = {name: free_port() for name in ("http", "https", "metrics", "imaps", "submission", "submissions")}
    listen = "".join(f'{name} = ["127.0.0.1:{port}"]\n' for name, port in ports.items())
    srv = Server(tmp_path, listen_toml=listen,
                 extra_toml='[mta_sts]\nmode = "enforce"\nmax_age = 86400\nmx = ["mx.example.test", "*.backup.example.test"]\n')
    srv.add_user(USER)
    srv.start()
    srv.ports = ports  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with exactly these labels (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_autoconfig_autodiscover_profile_and_mta_sts(web: Server) -> None:
    ports = web.ports  # type: ignore[attr-defined]
    for path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
        status, headers, body = _get(ports["http"], f"{path}?emailaddress={USER}", host="autoconfig.example.test")
        assert status == 200 and "xml" in headers["content-type"]
        root = ET.fromstring(body)
        provider = root.find("emailProvider")
        assert provider is not None and provider.get("id") == "example.test"
        incoming = provider.find("incomingServer[@type='imap']")
        assert incoming is not None
        assert incoming.findtext("hostname") == "mx.example.test"
        assert incoming.findtext("port") == str(ports["imaps"])
        assert incoming.findtext("socketType") == "SSL"
        assert incoming.findtext("username") == "%EMAILADDRESS%"
        outgoing = {(el.findtext("port"), el.findtext("socketType")) for el in provider.findall("outgoingServer")}
        assert outgoing == {(str(ports["submissions"]), "SSL"), (str(ports["submission"]), "STARTTLS")}
        # no plain IMAP/POP3 ports are advertised (none configured without TLS here)
        assert provider.find("incomingServer[@type='pop3']") is None

    request = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
               b'exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>' + USER.encode()
               + b"</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/"
               b"outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>")
    status, _, body = _get(ports["http"], "/autodiscover/autodiscover.xml", method="POST", body=request)
    assert status == 200
    ns = {"o": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
    protocols = {p.findtext("o:Type", namespaces=ns): p for p in ET.fromstring(body).iterfind(".//o:Protocol", ns)}
    assert protocols["IMAP"].findtext("o:Port", namespaces=ns) == str(ports["imaps"])
    assert protocols["IMAP"].findtext("o:LoginName", namespaces=ns) == USER
    assert protocols["SMTP"].findtext("o:Server", namespaces=ns) == "mx.example.test"
    status, _, body = _get(ports["http"], "/autodiscover/autodiscover.xml", method="POST",
                           body=request.replace(b"example.test", b"elsewhere.example"))
    assert b"<ErrorCode>600</ErrorCode>" in body.replace(b"ns0:", b"")

    status, headers, body = _get(ports["http"], f"/apple/profile.mobileconfig?email={USER}")
    assert status == 200 and headers["content-type"].startswith("application/x-apple-aspen-config")
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration"
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAddress"] == USER
    assert account["IncomingMailServerPortNumber"] == ports["imaps"]
    assert account["IncomingMailServerUseSSL"] is True
    assert account["OutgoingMailServerPortNumber"] == ports["submissions"]
    assert _get(ports["http"], "/apple/profile.mobileconfig?email=bob@elsewhere.example")[0] == 404

    # MTA-STS: over HTTPS, on mta-sts.<local domain> only (RFC 8461 §3.3)
    status, headers, body = _get(ports["https"], "/.well-known/mta-sts.txt", host="mta-sts.example.test", secure=True)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body == (b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.backup.example.test\r\n"
                    b"max_age: 86400\r\n")
    # `pigeon dns` announces the id of exactly this policy (RFC 8461 §3.1: the id changes with it)
    served_id = hashlib.sha256(body).hexdigest()[:20]
    zone = web.cli("dns", "example.test").stdout
    assert f'_mta-sts.example.test. IN TXT "v=STSv1; id={served_id}"' in zone, zone
    assert _get(ports["http"], "/.well-known/mta-sts.txt", host="mta-sts.example.test")[0] == 404
    assert _get(ports["https"], "/.well-known/mta-sts.txt", host="mta-sts.other.example", secure=True)[0] == 404
    assert _get(ports["http"], "/.well-known/acme-challenge/unknown-token")[0] == 404


def test_metrics_change_after_a_delivery_and_healthz(web: Server) -> None:
    ports = web.ports  # type: ignore[attr-defined]
    status, _, body = _get(ports["metrics"], "/healthz")
    assert (status, body) == (200, b"ok\n")
    status, headers, before = _get(ports["metrics"], "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = before.decode()
    delivered = {"service": "local", "result": "delivered"}
    assert _metric(text, "pigeon_messages_total", **delivered) == 0
    assert "pigeon_queue_messages" in text

    with smtplib.SMTP("127.0.0.1", web.smtp_port, timeout=10) as c:
        c.sendmail("someone@remote.example", [USER], b"Subject: hi\r\n\r\nhello\r\n")
    web.wait_messages(USER, 1)
    with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=10) as c:
        c.starttls(context=_no_verify())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(USER, "wrong password")
    deadline = time.monotonic() + 10
    while True:
        text = _get(ports["metrics"], "/metrics")[2].decode()
        if _metric(text, "pigeon_messages_total", **delivered) >= 1 and _metric(text, "pigeon_auth_failures_total") >= 1:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert _metric(text, "pigeon_messages_total", service="smtp", result="received") == 1
    assert _metric(text, "pigeon_sessions_total", service="smtp") >= 1
    assert _metric(text, "pigeon_tls_handshakes_total", version="TLSv1.3") >= 1
    assert _metric(text, "pigeon_delivery_delay_seconds_count", transport="local") == 1
    assert _metric(text, "pigeon_delivery_delay_seconds_bucket", transport="local", le="+Inf") == 1


def test_healthz_is_503_while_the_queue_directory_is_gone_and_200_again_after(web: Server) -> None:
    """/healthz fails when the queue cannot take mail. The directory is moved away rather than
    made read-only: the tests run as root, for whom a mode never denies a write."""
    ports = web.ports  # type: ignore[attr-defined]
    assert _get(ports["metrics"], "/healthz")[0] == 200
    queue = web.data_dir / "queue"
    os.rename(queue, web.data_dir / "queue.away")
    try:
        status, _, body = _get(ports["metrics"], "/healthz")
        assert status == 503
        assert f"the queue directory {queue} is not writable" in body.decode()
    finally:
        os.rename(web.data_dir / "queue.away", queue)
    status, _, body = _get(ports["metrics"], "/healthz")
    assert (status, body) == (200, b"ok\n")


def _no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_worker_processes_counts_reach_the_servers_metrics(tmp_path: Path) -> None:
    metrics = free_port()
    srv = Server(tmp_path, listen_toml=f'metrics = ["127.0.0.1:{metrics}"]\n', extra_toml="[smtp]\nprocesses = 2\n")
    srv.add_user(USER)
    srv.start()
    try:
        srv.wait_log(r"worker 1", timeout=30)
        sent = 12
        for i in range(sent):  # one connection each: the shared accept queue spreads them
            with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
                c.sendmail("someone@remote.example", [USER], f"Subject: {i}\r\n\r\nhello\r\n".encode())
        srv.wait_messages(USER, sent)
        deadline = time.monotonic() + 20  # the workers send their counts every 5 s
        while True:
            text = _get(metrics, "/metrics")[2].decode()
            received = _metric(text, "pigeon_messages_total", service="smtp", result="received")
            if received == sent and _metric(text, "pigeon_messages_total", service="local", result="delivered") == sent:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
        assert _metric(text, "pigeon_sessions_total", service="smtp") >= sent  # + the harness's port probe
        assert _get(metrics, "/healthz")[0] == 200
    finally:
        srv.stop()
