"""Crash safety of relay mail: SIGKILL the relaying server several times under load; nothing
acknowledged is lost (issue 15, "Crash safety stays proven ... for local mail and relay mail").

The relaying server (127.0.0.5) takes mail for ``relay.test`` (``relay_domains``) from anyone
and relays it, by the MX a real DNS server on loopback gives (``mx.relay.test`` = 127.0.0.2),
to a second ``pigeon serve`` there, the next hop, which is never killed. The relay mail is
committed to the intake journal and relayed from memory (the relay agent on the fast road, ``qmgr.lane``); with two
processes the SMTP worker relays its share itself, and the kill hits the server only (the
orphaned worker stops and the next start drains its journal). Every message
that got ``250`` (its token recorded) must reach the next hop's Maildir once the relaying
server runs again; duplicates only for relays under way at a kill.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import MakeServer
from tests.integration.harness import free_port
from tests.integration.test_crash import KILLS, Load, assert_all_arrived, kill_under_load
from tests.unit.dns.zone_server import ZoneServer

pytestmark = pytest.mark.integration

RCPTS = ["sink@relay.test", "other@relay.test"]


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_while_relaying_loses_nothing(make_server: MakeServer, tmp_path: Path, processes: int) -> None:
    port = free_port("127.0.0.2")
    dns = ZoneServer({"relay.test": [("MX", "10 mx.relay.test")],
                      "mx.relay.test": [("A", "127.0.0.2")]}).start()
    try:
        host, dport = dns.endpoint
        queue = (f'[dns]\nnameservers = ["{host}:{dport}"]\n[delivery]\nremote_port = {port}\n'
                 '[queue]\nretry_schedule = ["1s"]\njitter = 0.0\n')
        sink = make_server("sink", domains=["relay.test"], hostname="mx.relay.test", host="127.0.0.2",
                           smtp_port=port, extra_toml=queue)
        for r in RCPTS:
            sink.add_user(r)
        sink.start()
        srv = make_server("relay", domains=["a.test"], hostname="mx.a.test", host="127.0.0.5",
                          extra_toml=f'relay_domains = ["relay.test"]\n[smtp]\nprocesses = {processes}\n' + queue)
        srv.start()
        load = Load(srv, rcpts=RCPTS)
        accepted = kill_under_load(srv, load)
        dups = assert_all_arrived(sink, accepted, RCPTS)
        # At-least-once: only relays under way at a kill may repeat (the relay lane holds at
        # most 512 messages, the queue manager 32 attempts).
        assert dups <= KILLS * 2 * 512, dups
        assert srv.wait_queue(lambda q: q == [], timeout=30) == []
        assert srv.mail_events("corrupt") == []
        # With one process the kills hit relay mail in the intake journal (the relay lane's road):
        # a restart found journaled messages and moved them into the queue (queue.store rule 8).
        if processes == 1:
            assert "messages recovered from the intake journal" in srv.log
        print(f"relay crash test: {load.attempted} attempted, {len(accepted)} accepted, "
              f"{load.failures} client errors, {dups} duplicate copies, {KILLS} kills")
    finally:
        dns.stop()
