"""A small authoritative DNS server on loopback for tests (dnslib, UDP, a free port).

``ZoneServer({"example.org": [("MX", "10 mx1.example.org")], "mx1.example.org": [("A", "127.0.0.1")]})``
answers from the dict (types A, AAAA, CNAME, MX, TXT, PTR): a name not in it is NXDOMAIN, a name in ``servfail`` is SERVFAIL, a CNAME
is followed within the zone (``servfail={"*"}``: every name is SERVFAIL). ``queries`` counts the questions received (to test the cache).
The zone can be changed while the server runs (``zone[name] = ...``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from typing import Any

from dnslib import CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, AAAA, DNSRecord, SOA
from dnslib.server import BaseResolver, DNSLogger, DNSServer

Zone = dict[str, list[tuple[str, str] | tuple[str, str, int]]]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rdata(rtype: str, value: str) -> Any:
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "CNAME":
        return CNAME(value + ".")
    if rtype == "TXT":  # one record; split into 255-octet character-strings (RFC 1035 §3.3.14)
        raw = value.encode()
        return TXT([raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""])
    if rtype == "PTR":
        return PTR(value + ".")
    if rtype == "MX":
        pref, host = value.split()
        return MX(host if host == "." else host + ".", int(pref))
    raise ValueError(rtype)


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, server: ZoneServer) -> None:
        self.server = server

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        with self.server.lock:
            self.server.queries.append((qname, qtype))
            name = qname
            for _ in range(8):  # CNAME chain bound
                if name in self.server.servfail or "*" in self.server.servfail:
                    reply.header.rcode = RCODE.SERVFAIL
                    return reply
                records = self.server.zone.get(name)
                if records is None:
                    if name == qname:
                        reply.header.rcode = RCODE.NXDOMAIN
                    return reply
                cnames = [r for r in records if r[0] == "CNAME"]
                if cnames and qtype != "CNAME":
                    reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=_rdata("CNAME", cnames[0][1]), ttl=60))
                    name = cnames[0][1].lower()
                    continue
                for rec in records:
                    if rec[0] == qtype:
                        ttl = rec[2] if len(rec) > 2 else 300  # type: ignore[misc]
                        reply.add_answer(RR(name + ".", getattr(QTYPE, qtype), rdata=_rdata(qtype, rec[1]), ttl=ttl))
                if not reply.rr:
                    reply.add_auth(RR(name + ".", QTYPE.SOA, ttl=60, rdata=SOA("ns.test.", "hostmaster.test.",
                                                                               (1, 3600, 600, 86400, 60))))
                return reply
        return reply


class ZoneServer:
    def __init__(self, zone: Zone | None = None, servfail: Iterable[str] = ()) -> None:
        self.zone: Zone = dict(zone or {})
        self.servfail = set(servfail)
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.port = free_udp_port()
        self._server = DNSServer(_ZoneResolver(self), address="127.0.0.1", port=self.port,
                                 logger=DNSLogger("-request,-reply,-truncated,-error", prefix=False))

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> ZoneServer:
        self._server.start_thread()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()
        self._server.thread.join(5)

    def __enter__(self) -> ZoneServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
