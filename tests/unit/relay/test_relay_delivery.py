"""The relay agent against scripted peers on loopback (real sockets; fake DNS)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import subprocess
from pathlib import Path

import pytest

from pigeon.core.address import Address
from pigeon.core.envelope import Envelope, Recipient
from pigeon.core.queueid import QueueId
from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryJob
from pigeon.delivery.relay import RelayDelivery, RelayJob, RelayResult, RelaySettings
from pigeon.delivery.relay_session import RelayTimeouts
from pigeon.dns.fake import FakeResolver
from pigeon.dns.resolver import MxRecord
from pigeon.queue.source import FileBody, MemoryBody
from tests.unit.relay.peer import DEFAULT_EXTS, Peer, Script

QID = QueueId("0000000000000001")
SENDER = Address("alice", "example.test")
BOB = Address("bob", "a.test")
CAROL = Address("carol", "a.test")
DAVE = Address("dave", "a.test")
ERIN = Address("erin", "b.test")
BODY = b"From: alice@example.test\r\nTo: bob@a.test\r\nSubject: hi\r\n\r\nHello\r\n.dot line\r\nbye\r\n"
FAST = RelayTimeouts(connect=2, greeting=2, helo=2, mail=2, rcpt=2, data_init=2, data_block=2, data_done=2)


def _agent(resolver: FakeResolver, port: int, **kw: object) -> RelayDelivery:
    settings = RelaySettings(hostname="me.example.test", remote_port=port, timeouts=FAST, **kw)  # type: ignore[arg-type]
    return RelayDelivery(resolver, settings)


async def deliver_closed(agent: RelayDelivery, job: DeliveryJob) -> list[RecipientResult]:
    """Deliver, then close the agent's idle cached connections (the app does it at shutdown)."""
    try:
        return await agent.deliver(job)
    finally:
        await agent.close()


def _job(tmp: Path, *rcpts: Address, body: bytes = BODY, env: Envelope | None = None,
         params: tuple[Recipient, ...] = ()) -> DeliveryJob:
    path = tmp / "body"
    path.write_bytes(body)
    if env is None and not params:
        return DeliveryJob(QID, SENDER, rcpts, FileBody(path))
    return RelayJob(QID, SENDER, rcpts, FileBody(path), envelope=env, params=params)


def _one_mx(host: str = "127.0.0.1") -> FakeResolver:
    return FakeResolver(mx={"a.test": [MxRecord(10, "mx1.a.test")], "b.test": [MxRecord(10, "mx1.b.test")]},
                        hosts={"mx1.a.test": [host], "mx1.b.test": [host]})


def _deliver(tmp: Path, script: Script, job_rcpts: tuple[Address, ...] = (BOB, CAROL),
             **kw: object) -> tuple[list[RecipientResult], Peer]:
    peer = Peer(script)

    async def main() -> list[RecipientResult]:
        async with peer:
            agent = _agent(_one_mx(), peer.port)
            job = kw.pop("job", None) or _job(tmp, *job_rcpts)
            return await deliver_closed(agent, job)  # type: ignore[arg-type]

    return asyncio.run(main()), peer


def test_one_transaction_for_all_recipients_of_a_domain(tmp_path: Path) -> None:
    results, peer = _deliver(tmp_path, Script())
    assert [r.status for r in results] == ["delivered", "delivered"]
    assert results[0].host == f"mx1.a.test[127.0.0.1]:{peer.port}"
    assert results[0].reply.code == 250 and "queued as X" in str(results[0].reply)
    assert len(peer.received) == 1
    tx = peer.received[0]
    assert tx.mail.startswith("MAIL FROM:<alice@example.test>")
    assert [r.split()[1] for r in tx.rcpts] == ["TO:<bob@a.test>", "TO:<carol@a.test>"]
    assert tx.data == BODY  # unstuffed by the peer: the same octets
    assert tx.helo == "EHLO me.example.test"
    assert isinstance(results[0], RelayResult)


def test_per_recipient_rcpt_results(tmp_path: Path) -> None:
    script = Script(rcpt_replies={"bob@a.test": "450 4.2.1 mailbox busy", "carol@a.test": "550 5.1.1 no such user"})
    results, peer = _deliver(tmp_path, script, (BOB, CAROL, DAVE))
    assert [(r.status, r.reply.code) for r in results] == [("deferred", 450), ("failed", 550), ("delivered", 250)]
    assert "no such user" in str(results[1].reply)
    assert [r.split()[1] for r in peer.received[0].rcpts] == ["TO:<bob@a.test>", "TO:<carol@a.test>", "TO:<dave@a.test>"]


def test_no_recipient_accepted_sends_no_data(tmp_path: Path) -> None:
    script = Script(rcpt_replies={"bob@a.test": "550 5.1.1 no"})
    results, peer = _deliver(tmp_path, script, (BOB,))
    assert results[0].status == "failed"
    assert peer.received == []


@pytest.mark.parametrize("pipelining", [True, False])
def test_final_reply_mapping(tmp_path: Path, pipelining: bool) -> None:
    exts = DEFAULT_EXTS if pipelining else tuple(e for e in DEFAULT_EXTS if e != "PIPELINING")
    results, _ = _deliver(tmp_path, Script(extensions=exts, final_reply="554 5.7.1 spam"))
    assert [r.status for r in results] == ["failed", "failed"] and "spam" in str(results[0].reply)
    results, _ = _deliver(tmp_path, Script(extensions=exts, final_reply="451 4.3.0 try later"))
    assert [r.status for r in results] == ["deferred", "deferred"]


def test_data_refused(tmp_path: Path) -> None:
    results, _ = _deliver(tmp_path, Script(data_reply="451 4.3.0 not now"))
    assert [r.status for r in results] == ["deferred", "deferred"]


def test_mail_from_5xx_fails_all(tmp_path: Path) -> None:
    results, _ = _deliver(tmp_path, Script(mail_reply="550 5.7.1 you are blocked"))
    assert [r.status for r in results] == ["failed", "failed"] and "blocked" in str(results[0].reply)


def test_helo_fallback(tmp_path: Path) -> None:
    results, peer = _deliver(tmp_path, Script(ehlo_refused=True))
    assert [r.status for r in results] == ["delivered", "delivered"]
    assert peer.received[0].helo == "HELO me.example.test"


def test_greeting_5xx_from_only_host_fails(tmp_path: Path) -> None:
    results, _ = _deliver(tmp_path, Script(greeting="554 5.7.1 go away"))
    assert [r.status for r in results] == ["failed", "failed"]


def test_fallback_when_best_mx_is_down(tmp_path: Path) -> None:
    async def main() -> tuple[list[RecipientResult], Peer]:
        async with Peer(host="127.0.0.2") as peer:
            resolver = FakeResolver(mx={"a.test": [MxRecord(20, "mx2.a.test"), MxRecord(10, "mx1.a.test")]},
                                    hosts={"mx1.a.test": ["127.0.0.3"], "mx2.a.test": ["127.0.0.2"]})
            return await deliver_closed(_agent(resolver, peer.port), _job(tmp_path, BOB)), peer

    results, peer = asyncio.run(main())
    assert results[0].status == "delivered"
    assert results[0].host.startswith("mx2.a.test[127.0.0.2]")
    assert len(peer.received) == 1


def test_mail_4xx_tries_next_host(tmp_path: Path) -> None:
    async def main() -> tuple[list[RecipientResult], Peer, Peer]:
        async with Peer(Script(mail_reply="451 4.3.2 busy"), host="127.0.0.2") as p1:
            async with Peer(host="127.0.0.3") as p2:
                await p2.stop()
                p2 = Peer(host="127.0.0.3")
                # Same port on both addresses: bind the second peer to p1's port.
                p2._server = await asyncio.start_server(p2._session, "127.0.0.3", p1.port)
                p2.port = p1.port
                resolver = FakeResolver(mx={"a.test": [MxRecord(10, "mx1.a.test"), MxRecord(20, "mx2.a.test")]},
                                        hosts={"mx1.a.test": ["127.0.0.2"], "mx2.a.test": ["127.0.0.3"]})
                res = await deliver_closed(_agent(resolver, p1.port), _job(tmp_path, BOB))
                await p2.stop()
                return res, p1, p2

    results, p1, p2 = asyncio.run(main())
    assert results[0].status == "delivered" and results[0].host.startswith("mx2.a.test")
    assert p1.received == [] and len(p2.received) == 1


def test_all_hosts_down_defers(tmp_path: Path) -> None:
    resolver = FakeResolver(mx={"a.test": [MxRecord(10, "mx1.a.test")]}, hosts={"mx1.a.test": ["127.0.0.3"]})

    async def main() -> list[RecipientResult]:
        async with Peer(host="127.0.0.2") as peer:  # a port nobody listens on at 127.0.0.3
            return await deliver_closed(_agent(resolver, peer.port), _job(tmp_path, BOB))

    results = asyncio.run(main())
    assert results[0].status == "deferred"
    assert (results[0].reply.code, results[0].reply.enhanced) == (451, "4.4.1")


def test_drop_after_data_defers_and_does_not_try_next(tmp_path: Path) -> None:
    results, peer = _deliver(tmp_path, Script(drop_after_data=True))
    assert [r.status for r in results] == ["deferred", "deferred"]
    assert len(peer.received) == 1


def test_slow_peer_times_out(tmp_path: Path) -> None:
    peer = Peer(Script(delay=0.5))

    async def main() -> list[RecipientResult]:
        async with peer:
            t = RelayTimeouts(connect=1, greeting=0.2, helo=0.2, mail=0.2, rcpt=0.2, data_init=0.2,
                              data_block=0.2, data_done=0.2)
            agent = RelayDelivery(_one_mx(), RelaySettings("me.test", remote_port=peer.port, timeouts=t))
            return await deliver_closed(agent, _job(tmp_path, BOB))

    results = asyncio.run(main())
    assert results[0].status == "deferred" and results[0].reply.enhanced == "4.4.2"


def test_8bit_to_peer_without_8bitmime_is_converted(tmp_path: Path) -> None:
    body = ("From: a@example.test\r\nSubject: test\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Grüße aus Köln\r\n.punkt\r\n").encode()
    exts = tuple(e for e in DEFAULT_EXTS if e != "8BITMIME")
    job = _job(tmp_path, BOB, body=body)
    results, peer = _deliver(tmp_path, Script(extensions=exts), job=job)
    assert results[0].status == "delivered"
    sent = peer.received[0].data
    assert sent.isascii()
    assert "BODY=" not in peer.received[0].mail
    msg = email.message_from_bytes(sent, policy=email.policy.default)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_payload(decode=True) == "Grüße aus Köln\r\n.punkt\r\n".encode()


def test_8bit_to_peer_with_8bitmime_is_sent_as_is(tmp_path: Path) -> None:
    body = "Subject: x\r\n\r\nGrüße\r\n".encode()
    results, peer = _deliver(tmp_path, Script(), job=_job(tmp_path, BOB, body=body))
    assert results[0].status == "delivered"
    assert peer.received[0].data == body
    assert "BODY=8BITMIME" in peer.received[0].mail


def _counting_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the relay sends to a worker thread."""
    hops: list[str] = []
    real = asyncio.to_thread

    async def to_thread(func: object, /, *args: object, **kw: object) -> object:
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    return hops


@pytest.mark.parametrize("chunking", [True, False])
def test_a_body_in_memory_is_sent_from_memory_without_a_thread_hop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunking: bool) -> None:
    """Rule 12: journaled relay mail (a MemoryBody) is examined and sent on the event loop; the
    same job from a file goes through a thread, and the peer gets the same octets."""
    body = "From: a@example.test\r\nSubject: x\r\n\r\nGrüße\r\n.dot\r\n".encode()
    exts = DEFAULT_EXTS if chunking else tuple(e for e in DEFAULT_EXTS if e != "CHUNKING")
    hops = _counting_threads(monkeypatch)
    job = RelayJob(QID, SENDER, (BOB,), MemoryBody(body), envelope=Envelope(SENDER, [Recipient(BOB)]),
                   params=(Recipient(BOB),))
    results, peer = _deliver(tmp_path, Script(extensions=exts), job=job)
    assert results[0].status == "delivered" and peer.received[0].data == body
    assert "BODY=8BITMIME" in peer.received[0].mail and f"SIZE={len(body)}" in peer.received[0].mail
    from_memory = list(hops)
    results, peer = _deliver(tmp_path, Script(extensions=exts), job=_job(tmp_path, BOB, body=body))
    assert results[0].status == "delivered" and peer.received[0].data == body
    assert {"has_8bit", "_open_body"} <= set(hops[len(from_memory):])  # a file: read in a thread
    assert not {"has_8bit", "header_section_has_8bit", "_open_body"} & set(from_memory)


def test_a_body_in_memory_is_converted_to_7bit_for_a_peer_without_8bitmime(tmp_path: Path) -> None:
    body = ("From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n").encode()
    exts = tuple(e for e in DEFAULT_EXTS if e != "8BITMIME")
    job = RelayJob(QID, SENDER, (BOB,), MemoryBody(body))
    results, peer = _deliver(tmp_path, Script(extensions=exts), job=job)
    assert results[0].status == "delivered"
    sent = peer.received[0].data
    assert sent.isascii() and email.message_from_bytes(sent).get_payload(decode=True) == "Grüße\r\n".encode()


def test_smtputf8_needed_but_not_offered_fails_567(tmp_path: Path) -> None:
    exts = tuple(e for e in DEFAULT_EXTS if e != "SMTPUTF8")
    rcpt = Address("jürgen", "a.test")
    job = _job(tmp_path, rcpt, env=Envelope(SENDER, [Recipient(rcpt)], smtputf8=True),
               params=(Recipient(rcpt),))
    results, peer = _deliver(tmp_path, Script(extensions=exts), job=job)
    assert results[0].status == "failed" and results[0].reply.enhanced == "5.6.7"
    assert peer.received == []


def test_smtputf8_offered_is_used(tmp_path: Path) -> None:
    rcpt = Address("jürgen", "a.test")
    job = _job(tmp_path, rcpt, env=Envelope(SENDER, [Recipient(rcpt)], smtputf8=True),
               params=(Recipient(rcpt),))
    results, peer = _deliver(tmp_path, Script(), job=job)
    assert results[0].status == "delivered"
    assert "SMTPUTF8" in peer.received[0].mail and "jürgen@a.test" in peer.received[0].rcpts[0]


def test_size_over_peer_limit_fails_before_mail(tmp_path: Path) -> None:
    exts = tuple(e if not e.startswith("SIZE") else "SIZE 20" for e in DEFAULT_EXTS)
    results, peer = _deliver(tmp_path, Script(extensions=exts))
    assert [(r.status, r.reply.code) for r in results] == [("failed", 552), ("failed", 552)]
    assert peer.received == []


def test_size_parameter_sent(tmp_path: Path) -> None:
    _, peer = _deliver(tmp_path, Script())
    assert f"SIZE={len(BODY)}" in peer.received[0].mail


def test_chunking_uses_bdat(tmp_path: Path) -> None:
    results, peer = _deliver(tmp_path, Script(extensions=(*DEFAULT_EXTS, "CHUNKING")))
    assert [r.status for r in results] == ["delivered", "delivered"]
    assert peer.received[0].bdat and peer.received[0].data == BODY


def test_dsn_parameters_passed_on_when_offered(tmp_path: Path) -> None:
    env = Envelope(SENDER, [Recipient(BOB, ("SUCCESS", "FAILURE"), "rfc822;bob@a.test")], ret="HDRS", envid="E1")
    job = _job(tmp_path, BOB, env=env, params=tuple(env.recipients))
    results, peer = _deliver(tmp_path, Script(), job=job)
    tx = peer.received[0]
    assert "RET=HDRS" in tx.mail and "ENVID=E1" in tx.mail
    assert "NOTIFY=SUCCESS,FAILURE" in tx.rcpts[0] and "ORCPT=rfc822;bob@a.test" in tx.rcpts[0]
    assert isinstance(results[0], RelayResult) and results[0].peer_dsn


def test_dsn_parameters_dropped_without_dsn(tmp_path: Path) -> None:
    env = Envelope(SENDER, [Recipient(BOB, ("SUCCESS",), None)], ret="FULL", envid="E1")
    exts = tuple(e for e in DEFAULT_EXTS if e != "DSN")
    job = _job(tmp_path, BOB, env=env, params=tuple(env.recipients))
    results, peer = _deliver(tmp_path, Script(extensions=exts), job=job)
    tx = peer.received[0]
    assert "RET=" not in tx.mail and "NOTIFY" not in tx.rcpts[0]
    assert isinstance(results[0], RelayResult) and not results[0].peer_dsn


def test_one_transaction_per_domain(tmp_path: Path) -> None:
    results, peer = _deliver(tmp_path, Script(), (BOB, ERIN, CAROL))
    assert [r.status for r in results] == ["delivered"] * 3
    assert results[1].host.startswith("mx1.b.test")
    assert sorted(len(tx.rcpts) for tx in peer.received) == [1, 2]


def test_null_mx_and_nxdomain_through_the_agent(tmp_path: Path) -> None:
    resolver = FakeResolver(mx={"a.test": [MxRecord(0, "")]})
    results = asyncio.run(_agent(resolver, 25).deliver(_job(tmp_path, BOB, Address("x", "nowhere.test"))))
    assert [(r.status, r.reply.code, r.reply.enhanced) for r in results] == [
        ("failed", 556, "5.1.10"), ("failed", 550, "5.1.2")]
    assert results[0].host == "a.test"


def test_mx_without_addresses(tmp_path: Path) -> None:
    resolver = FakeResolver(mx={"a.test": [MxRecord(10, "gone.a.test")]})
    results = asyncio.run(_agent(resolver, 25).deliver(_job(tmp_path, BOB)))
    assert (results[0].status, results[0].reply.enhanced) == ("failed", "5.4.4")


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=peer.test"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def test_opportunistic_starttls(tmp_path: Path, tls_context: ssl.SSLContext) -> None:
    results, peer = _deliver(tmp_path, Script(tls=tls_context))
    assert [r.status for r in results] == ["delivered", "delivered"]
    assert peer.received[0].tls
    assert peer.received[0].data == BODY


def test_starttls_off_sends_plaintext(tmp_path: Path, tls_context: ssl.SSLContext) -> None:
    peer = Peer(Script(tls=tls_context))

    async def main() -> list[RecipientResult]:
        async with peer:
            agent = _agent(_one_mx(), peer.port, starttls=False)
            return await deliver_closed(agent, _job(tmp_path, BOB))

    results = asyncio.run(main())
    assert results[0].status == "delivered" and not peer.received[0].tls


def test_settings_from_config(tmp_path: Path) -> None:
    from pigeon.config.model import Config, DeliveryConfig, Endpoint, Listen

    cfg = Config(hostname="mx.example.test", data_dir=tmp_path,
                 listen=Listen(smtp=(Endpoint("127.0.0.5", 25), Endpoint("0.0.0.0", 2525))),
                 delivery=DeliveryConfig(remote_port=2526, smarthost="relay.isp.test"))
    s = RelaySettings.from_config(cfg)
    assert s.self_addresses == frozenset({"127.0.0.5"})
    assert s.smarthost == ("relay.isp.test", 2526) and s.remote_port == 2526


def _via_smarthost(tmp_path: Path, script: Script, **kw: object) -> tuple[list[RecipientResult], Peer]:
    peer = Peer(script)

    async def main() -> list[RecipientResult]:
        async with peer:
            agent = _agent(FakeResolver(), peer.port, smarthost=("127.0.0.1", peer.port),
                           smarthost_verify=False, **kw)
            return await deliver_closed(agent, _job(tmp_path, BOB, ERIN))

    return asyncio.run(main()), peer


def test_smarthost_requires_tls_by_default(tmp_path: Path) -> None:
    results, peer = _via_smarthost(tmp_path, Script())  # the peer offers no STARTTLS
    assert [r.status for r in results] == ["deferred", "deferred"]
    assert results[0].reply.enhanced == "4.7.5"
    assert peer.received == [] or not peer.received[0].mail  # no MAIL was sent in the clear


def test_smarthost_uses_tls_and_one_transaction(tmp_path: Path, tls_context: ssl.SSLContext) -> None:
    results, peer = _via_smarthost(tmp_path, Script(tls=tls_context))
    assert [r.status for r in results] == ["delivered", "delivered"]
    assert len(peer.received) == 1 and peer.received[0].tls  # both domains in one envelope
    assert sorted(peer.received[0].rcpts) == ["RCPT TO:<bob@a.test>", "RCPT TO:<erin@b.test>"]


def test_smarthost_opportunistic_allows_plaintext(tmp_path: Path) -> None:
    results, _ = _via_smarthost(tmp_path, Script(), smarthost_require_tls=False)
    assert [r.status for r in results] == ["delivered", "delivered"]


def test_connection_reused_for_the_next_message_to_the_same_host(tmp_path: Path) -> None:
    peer = Peer(Script())

    async def main() -> tuple[list[RecipientResult], list[RecipientResult], int]:
        async with peer:
            agent = _agent(_one_mx(), peer.port)
            first = await agent.deliver(_job(tmp_path, BOB))
            second = await agent.deliver(_job(tmp_path, CAROL))
            reused = agent.reused_connections
            await agent.close()
            return first, second, reused

    first, second, reused = asyncio.run(main())
    assert [r.status for r in first + second] == ["delivered", "delivered"]
    assert peer.connections == 1 and reused == 1  # one connection carried both transactions
    assert len(peer.received) == 2


def test_a_cached_connection_the_peer_closed_is_replaced(tmp_path: Path) -> None:
    peer = Peer(Script(close_after_reply=True))  # hangs up after each message

    async def main() -> list[RecipientResult]:
        async with peer:
            agent = _agent(_one_mx(), peer.port)
            await agent.deliver(_job(tmp_path, BOB))
            await asyncio.sleep(0.05)  # the peer's close arrives while the connection is idle
            return await deliver_closed(agent, _job(tmp_path, CAROL))

    results = asyncio.run(main())
    assert results[0].status == "delivered"
    assert peer.connections == 2 and len(peer.received) == 2  # RSET failed: a new connection


def _two_messages(tmp_path: Path, peer: Peer) -> tuple[list[RecipientResult], list[RecipientResult]]:
    async def main() -> tuple[list[RecipientResult], list[RecipientResult]]:
        async with peer:
            agent = _agent(_one_mx(), peer.port)
            first = await agent.deliver(_job(tmp_path, BOB))
            return first, await deliver_closed(agent, _job(tmp_path, CAROL))

    return asyncio.run(main())


def test_a_cached_connection_is_checked_with_rset_in_the_pipelined_group(tmp_path: Path) -> None:
    # relay_session Rule 16: RSET, MAIL, RCPT and DATA in one write, no round trip of its own.
    peer = Peer(Script(rset_waits=1.0))
    first, second = _two_messages(tmp_path, peer)
    assert [r.status for r in first + second] == ["delivered", "delivered"]
    assert peer.connections == 1 and peer.rset_grouped == [True]
    assert [t.rcpts for t in peer.received] == [["RCPT TO:<bob@a.test>"], ["RCPT TO:<carol@a.test>"]]


def test_without_pipelining_rset_is_a_round_trip_of_its_own(tmp_path: Path) -> None:
    exts = tuple(e for e in DEFAULT_EXTS if e != "PIPELINING")
    peer = Peer(Script(extensions=exts, rset_waits=0.2))
    first, second = _two_messages(tmp_path, peer)
    assert [r.status for r in first + second] == ["delivered", "delivered"]
    assert peer.connections == 1 and peer.rset_grouped == [False]  # it waited for the 250 first


def test_a_cached_connection_refusing_rset_is_replaced_and_gets_no_data(tmp_path: Path) -> None:
    peer = Peer(Script(rset_reply="554 5.3.0 confused"))
    first, second = _two_messages(tmp_path, peer)
    assert [r.status for r in first + second] == ["delivered", "delivered"]
    assert peer.connections == 2  # the refused one was closed, the message sent on a new one
    assert [t.rcpts for t in peer.received] == [["RCPT TO:<bob@a.test>"], ["RCPT TO:<carol@a.test>"]]
    assert all(t.data for t in peer.received)  # no transaction half-sent on the old connection


def test_smarthost_connection_is_reused(tmp_path: Path, tls_context: ssl.SSLContext) -> None:
    peer = Peer(Script(tls=tls_context))

    async def main() -> None:
        async with peer:
            agent = _agent(FakeResolver(), peer.port, smarthost=("127.0.0.1", peer.port), smarthost_verify=False)
            for rcpt in (BOB, ERIN, CAROL):
                assert (await agent.deliver(_job(tmp_path, rcpt)))[0].status == "delivered"
            await agent.close()

    asyncio.run(main())
    assert peer.connections == 1 and len(peer.received) == 3  # one TLS handshake for three messages
