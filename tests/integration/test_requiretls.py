"""REQUIRETLS (RFC 8689) through the whole server: offered on submission after STARTTLS, taken on
MAIL FROM, kept in the queue record, and a message that no DANE or MTA-STS policy can carry is
returned to its sender with 5.7.30 (the DNS is a zone server on loopback; nothing is sent)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port
from tests.integration.test_submission import PASSWORD, insecure, wait_token
from tests.unit.dns.zone_server import ZoneServer

pytestmark = pytest.mark.integration


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    zone = {"remote.test": [("MX", "10 mx.remote.test")], "mx.remote.test": [("A", "127.0.0.4")]}
    with ZoneServer(zone) as dns:
        host, dport = dns.endpoint
        port = free_port()
        srv = Server(tmp_path, listen_toml=f'submission = ["127.0.0.1:{port}"]',
                     extra_toml=f'[dns]\nnameservers = ["{host}:{dport}"]\n[auth]\nfailure_delay = 0\n'
                                '[queue]\nretry_schedule = ["1s"]\njitter = 0.0\n')
        srv.add_user("alice@example.test", PASSWORD)
        srv.start()
        try:
            yield srv, port
        finally:
            srv.stop()


def test_requiretls_offered_after_starttls_and_bounced_without_a_policy(site: tuple[Server, int]) -> None:
    srv, port = site
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as c:
        c.ehlo("client.test")
        assert not c.has_extn("requiretls")  # RFC 8689 §3: only over TLS
        assert c.mail("alice@example.test", ["REQUIRETLS"])[0] // 100 == 5  # refused in clear text
        c.rset()
        c.starttls(context=insecure())
        c.ehlo("client.test")
        assert c.has_extn("requiretls")
        c.login("alice@example.test", PASSWORD)
        assert c.mail("alice@example.test", ["REQUIRETLS=1"])[0] == 501  # takes no value
        c.rset()
        refused = c.sendmail("alice@example.test", ["bob@remote.test"],
                             b"From: alice@example.test\r\nSubject: secret-rtls\r\n\r\nfor TLS only\r\n",
                             mail_options=["REQUIRETLS"])
        assert refused == {}
    bounces = wait_token(srv, "alice@example.test", "5.7.30", timeout=30)
    assert bounces, srv.log()
    assert b"REQUIRETLS" in bounces[0] and b"bob@remote.test" in bounces[0]
