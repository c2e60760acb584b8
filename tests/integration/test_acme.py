"""Certificates from ACME against Pebble, Let's Encrypt's test server, on loopback (issue #19):
the server orders a certificate (http-01 on its own http listener, Pebble resolving the names
through a loopback DNS server), serves it on 993 and 465 without a restart, and renews it at
two thirds of its (short) lifetime. The same order validated by tls-alpn-01 (RFC 8737) on the
https listener (Pebble's ``tlsPort``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration.harness import Server, free_port, wait_port
from tests.unit.dns.zone_server import ZoneServer

pytestmark = pytest.mark.integration

# Pebble's certificates live this long; the server renews at two thirds (20 s).
VALIDITY = 30


def _served_certificate(port: int) -> x509.Certificate:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="mx.example.test") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _issuer_cn(cert: x509.Certificate) -> str:
    return str(cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[tuple[int, Path, int, int]]:
    """Pebble: (its port, its CA file, the http-01 port, the tls-alpn-01 port it validates on)."""
    exe = shutil.which("pebble")
    if exe is None:  # `make test-deps` installs it (Debian package pebble)
        subprocess.run(["make", "-C", str(Path(__file__).resolve().parents[2]), "test-deps"], check=True, timeout=600)
        exe = shutil.which("pebble")
    assert exe is not None, "pebble is not installed (make test-deps)"
    # Pebble's own HTTPS certificate: the server trusts it through [acme] ca_file.
    cert, key = tmp_path / "pebble.crt", tmp_path / "pebble.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    port, http_port, tls_port = free_port(), free_port(), free_port()
    zone = ZoneServer({name: [("A", "127.0.0.1")] for name in
                       ("mx.example.test", "mta-sts.example.test", "autoconfig.example.test")}).start()
    config = tmp_path / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{free_port()}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
        "certificateValidityPeriod": VALIDITY}}))
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    host, dns_port = zone.endpoint
    log = open(tmp_path / "pebble.log", "wb")
    proc = subprocess.Popen([exe, "-config", str(config), "-dnsserver", f"{host}:{dns_port}"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield port, cert, http_port, tls_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        zone.stop()


def test_pebble_issues_serves_and_renews(tmp_path: Path, pebble: tuple[int, Path, int, int]) -> None:
    port, ca_file, http_port, _ = pebble
    imaps, submissions = free_port(), free_port()
    listen = (f'http = ["127.0.0.1:{http_port}"]\nimaps = ["127.0.0.1:{imaps}"]\n'
              f'submissions = ["127.0.0.1:{submissions}"]\n')
    (tmp_path / "srv").mkdir()
    srv = Server(tmp_path / "srv", listen_toml=listen,
                 extra_toml=(f'[acme]\ndirectory = "https://127.0.0.1:{port}/dir"\nemail = "admin@example.test"\n'
                             f'ca_file = "{ca_file}"\n'))
    srv.start()
    try:
        # Before the order ends the self-signed development certificate is served.
        deadline = time.monotonic() + 60
        while "Pebble" not in _issuer_cn(_served_certificate(imaps)):
            assert time.monotonic() < deadline, srv.log
            time.sleep(0.5)
        first = _served_certificate(imaps)
        on_465 = _served_certificate(submissions)
        assert _issuer_cn(on_465).startswith("Pebble Intermediate CA")
        assert on_465.serial_number == first.serial_number
        names = set(first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
        assert names == {"mx.example.test", "mta-sts.example.test", "autoconfig.example.test"}
        stored = tmp_path / "srv" / "data" / "acme"
        for name in ("cert.pem", "key.pem", "account.key"):
            assert (stored / name).stat().st_mode & 0o777 == 0o600

        # Renewal at two thirds of 30 s, installed on both listeners without a restart.
        pid = srv.pid
        deadline = time.monotonic() + VALIDITY * 2
        while _served_certificate(imaps).serial_number == first.serial_number:
            assert time.monotonic() < deadline, srv.log
            time.sleep(1)
        renewed = _served_certificate(imaps)
        assert _issuer_cn(renewed).startswith("Pebble Intermediate CA")
        assert renewed.not_valid_before_utc >= first.not_valid_before_utc
        deadline = time.monotonic() + 10
        while _served_certificate(submissions).serial_number != renewed.serial_number:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert srv.pid == pid
    finally:
        srv.stop()


def test_pebble_validates_by_tls_alpn_01_on_the_https_listener(tmp_path: Path,
                                                                pebble: tuple[int, Path, int, int]) -> None:
    port, ca_file, _, https = pebble
    imaps = free_port()
    (tmp_path / "srv").mkdir()
    srv = Server(tmp_path / "srv", listen_toml=f'https = ["127.0.0.1:{https}"]\nimaps = ["127.0.0.1:{imaps}"]\n',
                 extra_toml=(f'[acme]\ndirectory = "https://127.0.0.1:{port}/dir"\nchallenge = "tls-alpn-01"\n'
                             f'ca_file = "{ca_file}"\n'))
    srv.start()
    try:
        deadline = time.monotonic() + 60
        while "Pebble" not in _issuer_cn(_served_certificate(imaps)):
            assert time.monotonic() < deadline, srv.log
            time.sleep(0.5)
        cert = _served_certificate(imaps)
        names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
        assert names == {"mx.example.test", "mta-sts.example.test", "autoconfig.example.test"}
        # Only tls-alpn-01 answers were posted and there is no http listener: Pebble validated
        # each name on the https listener (the handshake itself: tests/unit/tls/test_tls_alpn.py).
        assert "acme: certificate issued for" in srv.log and "acme: ordering a certificate" not in srv.log
        # with no validation pending, https serves the issued certificate, for any name
        assert _served_certificate(https).serial_number == cert.serial_number
        assert not list((tmp_path / "srv" / "data" / "acme" / "alpn").iterdir())  # no key left behind
    finally:
        srv.stop()
