"""The relay agent delivering to real ``pigeon serve`` processes, routed by a real DNS server.

The sending side is ``RelayDelivery`` in the test process (the agent on its own; the whole path
through the queue is in test_relay_through_queue.py);
the receiving side is the real server on its own 127.0.0.x address, all on one port
(``remote_port``), with the zones served by a dnslib server on loopback.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.clocks import SystemClock
from pigeon.core.address import Address
from pigeon.core.envelope import Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.queue.source import FileBody
from pigeon.delivery.relay import RelayDelivery, RelayJob, RelaySettings
from pigeon.dns.resolver import DnsResolver
from tests.integration.harness import Server, free_port
from tests.unit.dns.zone_server import ZoneServer

pytestmark = pytest.mark.integration

QID = QueueId("0000000000000002")
SENDER = Address("alice", "sender.test")


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[tuple[Server, Server, ZoneServer, int]]:
    port = free_port("127.0.0.2")
    backup_dir, primary_dir = tmp_path / "b", tmp_path / "p"
    backup_dir.mkdir()
    primary_dir.mkdir()
    primary = Server(primary_dir, domains=["dest.test"], hostname="mx1.dest.test", host="127.0.0.2", smtp_port=port)
    other = Server(backup_dir, domains=["other.test"], hostname="mx.other.test", host="127.0.0.3", smtp_port=port)
    for s, user in ((primary, "bob@dest.test"), (other, "erin@other.test")):
        s.add_user(user)
        s.start()
    zone = {
        "dest.test": [("MX", "5 down.dest.test"), ("MX", "10 mx1.dest.test")],
        "down.dest.test": [("A", "127.0.0.4")],  # nothing listens there
        "mx1.dest.test": [("A", "127.0.0.2")],
        "other.test": [("A", "127.0.0.3")],  # implicit MX
        "nomail.test": [("MX", "0 .")],
    }
    dns = ZoneServer(zone).start()
    try:
        yield primary, other, dns, port
    finally:
        dns.stop()
        primary.stop()
        other.stop()


def _deliver(tmp_path: Path, dns: ZoneServer, port: int, body: bytes, rcpts: list[Recipient],
             env: Envelope | None = None) -> list[RecipientResult]:
    path = tmp_path / "body.eml"
    path.write_bytes(body)

    async def main() -> list[RecipientResult]:
        resolver = DnsResolver([dns.endpoint], SystemClock(), lifetime=3.0)
        agent = RelayDelivery(resolver, RelaySettings("mx.sender.test", remote_port=port))
        job = RelayJob(QID, SENDER, tuple(r.address for r in rcpts), FileBody(path),
                       envelope=env or Envelope(SENDER, rcpts), params=tuple(rcpts))
        try:
            return await agent.deliver(job)
        finally:
            await agent.close()

    return asyncio.run(main())


def test_mx_fallback_implicit_mx_and_null_mx(tmp_path: Path, topology: tuple[Server, Server, ZoneServer, int]) -> None:
    primary, other, dns, port = topology
    body = "From: alice@sender.test\r\nSubject: relay test\r\n\r\nHello über the wire\r\n.dot\r\n".encode()
    rcpts = [Recipient(Address("bob", "dest.test")), Recipient(Address("erin", "other.test")),
             Recipient(Address("x", "nomail.test")), Recipient(Address("y", "nowhere.test"))]
    results = _deliver(tmp_path, dns, port, body, rcpts, Envelope(SENDER, rcpts, body="8BITMIME"))
    assert [r.status for r in results] == ["delivered", "delivered", "failed", "failed"]
    assert results[0].host == f"mx1.dest.test[127.0.0.2]:{port}"  # the best MX was down
    assert results[1].host == f"other.test[127.0.0.3]:{port}"
    assert results[2].reply.enhanced == "5.1.10" and results[3].reply.enhanced == "5.1.2"
    got = primary.wait_messages("bob@dest.test", 1)
    assert len(got) == 1
    msg = email.message_from_bytes(got[0], policy=email.policy.default)
    assert msg["Subject"] == "relay test"
    assert "Hello über the wire\n.dot" in got[0].decode()
    assert len(other.wait_messages("erin@other.test", 1)) == 1


def test_unknown_user_at_the_peer_fails_only_that_recipient(
        tmp_path: Path, topology: tuple[Server, Server, ZoneServer, int]) -> None:
    primary, _, dns, port = topology
    rcpts = [Recipient(Address("bob", "dest.test"), ("FAILURE",), "rfc822;bob@dest.test"),
             Recipient(Address("nobody", "dest.test"))]
    results = _deliver(tmp_path, dns, port, b"Subject: two\r\n\r\nhi\r\n", rcpts)
    assert [r.status for r in results] == ["delivered", "failed"]
    assert results[1].reply.code == 550
    assert len(primary.wait_messages("bob@dest.test", 1)) == 1
