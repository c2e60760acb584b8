"""The milter client against rspamd from Debian (its proxy worker in milter mode, no Redis).

Our own rspamd on loopback ports with a configuration directory of its own
(``tests/integration/rspamd.py``; installed by ``make test-deps`` or by that helper when it is
missing). GTUBE is rejected with rspamd's reply; a normal message reaches INBOX with rspamd's
headers; a milter that is not there gets ``milter_default_action``.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Server, free_port
from tests.integration.rspamd import Rspamd, ensure_rspamd
from tests.unit.dns.zone_server import ZoneServer

pytestmark = pytest.mark.integration

CLIENT_IP = "127.0.0.8"
# The GTUBE test string (rspamd's rule GTUBE: action reject).
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


@dataclass
class Rig:
    srv: Server
    rspamd: Rspamd


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    binary = ensure_rspamd()
    assert binary is not None, "rspamd is not installed and could not be (make test-deps)"
    dns = ZoneServer(servfail={"*"}).start()
    rspamd = Rspamd(tmp_path_factory.mktemp("rspamd"), dns.port).start(binary)
    srv = Server(tmp_path_factory.mktemp("mx"), domains=["example.test"], hostname="mx.example.test",
                 host="127.0.0.2",
                 extra_toml=f'[dns]\nnameservers = ["127.0.0.1:{dns.port}"]\n'
                            f'[inbound]\nmilters = ["inet:127.0.0.1:{rspamd.milter_port}"]\n')
    srv.add_user("bob@example.test")
    srv.start()
    try:
        yield Rig(srv, rspamd)
    finally:
        srv.stop()
        rspamd.stop()
        dns.stop()


def send(srv: Server, msg: bytes, port: int | None = None) -> tuple[int, bytes]:
    with smtplib.SMTP(srv.host, port or srv.smtp_port, source_address=(CLIENT_IP, 0), timeout=120) as c:
        c.ehlo("client.outside.test")
        c.mail("alice@outside.test")
        code, text = c.rcpt("bob@example.test")
        assert code == 250, text
        return c.data(msg)


def msg(token: str, body: bytes = b"Hello Bob,\r\n\r\nsee you at noon.\r\n") -> bytes:
    return (f"From: Alice <alice@outside.test>\r\nTo: Bob <bob@example.test>\r\nSubject: lunch {token}\r\n"
            f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{token}@outside.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode() + body


def find(srv: Server, token: str, folder: str = "", timeout: float = 20.0) -> bytes | None:
    return srv.find_message("bob@example.test", token, folder, timeout)


def test_gtube_is_rejected_with_rspamds_reply(rig: Rig) -> None:
    code, text = send(rig.srv, msg("tok-gtube", b"This is spam.\r\n" + GTUBE + b"\r\n"))
    assert code == 554 or code == 550, (code, text, rig.rspamd.log()[-2000:])
    assert text.startswith(b"5.7.1") and b"Gtube pattern" in text  # rspamd's own reply (SMFIR_REPLYCODE)
    assert find(rig.srv, "tok-gtube", timeout=1.0) is None
    line = rig.srv.wait_log(r"reject client=127\.0\.0\.8 stage=DATA.*milter=reject.*$").group(0)
    assert "Gtube pattern" in line


def test_a_normal_message_gets_rspamds_headers_and_reaches_inbox(rig: Rig) -> None:
    code, text = send(rig.srv, msg("tok-ham"))
    assert code == 250, (text, rig.rspamd.log()[-2000:])
    data = find(rig.srv, "tok-ham")
    assert data is not None
    head = data.split(b"\n\n", 1)[0]
    assert b"\nX-Spamd-Result:" in head or b"\nX-Spam-Status:" in head, head.decode()
    assert b"X-Spam: Yes" not in head
    assert b"Authentication-Results: mx.example.test;" in head  # ours, written before the milter ran


def test_an_unreachable_milter_tempfails_by_default(tmp_path: Path) -> None:
    dead = free_port()
    srv = Server(tmp_path, domains=["example.test"], host="127.0.0.2",
                 extra_toml=f'[inbound]\nmilters = ["inet:127.0.0.1:{dead}"]\nspf = false\ndkim = false\n'
                            "dmarc = false\narc = false\n")
    srv.add_user("bob@example.test")
    srv.start()
    try:
        code, text = send(srv, msg("tok-dead"))
        assert code == 451 and text.startswith(b"4.7.1")
    finally:
        srv.stop()


def test_an_unreachable_milter_with_default_accept_lets_mail_through(tmp_path: Path) -> None:
    dead = free_port()
    srv = Server(tmp_path, domains=["example.test"], host="127.0.0.2",
                 extra_toml=f'[inbound]\nmilters = ["inet:127.0.0.1:{dead}"]\nmilter_default_action = "accept"\n'
                            "spf = false\ndkim = false\ndmarc = false\narc = false\n")
    srv.add_user("bob@example.test")
    srv.start()
    try:
        code, _ = send(srv, msg("tok-accept"))
        assert code == 250
        assert find(srv, "tok-accept") is not None
    finally:
        srv.stop()
