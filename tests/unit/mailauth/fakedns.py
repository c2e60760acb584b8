"""A fake ``MailAuthDns`` for unit tests: zones written as dicts (DESIGN.md: fakes only for DNS).

``FakeDns({"example.net": [("TXT", "v=spf1 -all"), ("A", "192.0.2.1"), ("MX", (10, "mx.example.net"))]})``

- a name absent from the zone is NXDOMAIN (``NoSuchDomain``); a present name without records
  of the asked type answers ``[]``;
- a record whose value is a ``DnsError`` instance raises it for that type; the pseudo type
  ``"*"`` raises it for every type the name has no records of;
- a ``CNAME`` record is followed (within the zone, a few levels);
- ``queries`` records every question, so tests count lookups.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from pigeon.dns.resolver import DnsError, MxRecord, NoSuchDomain

Record = tuple[str, object]


class FakeDns:
    def __init__(self, zone: Mapping[str, Sequence[Record]] | None = None) -> None:
        self.zone: dict[str, list[Record]] = {k.lower().rstrip("."): list(v) for k, v in (zone or {}).items()}
        self.queries: list[tuple[str, str]] = []

    def _answer(self, name: str, rdtype: str) -> list[object]:
        name = name.lower().rstrip(".")
        self.queries.append((name, rdtype))
        for _ in range(5):
            records = self.zone.get(name)
            if records is None:
                raise NoSuchDomain(f"{name}: NXDOMAIN")
            for rtype, value in records:
                if rtype == rdtype and isinstance(value, DnsError):
                    raise value
            cname = [v for t, v in records if t == "CNAME"]
            if cname and rdtype != "CNAME":
                name = str(cname[0]).lower().rstrip(".")
                continue
            found = [v for t, v in records if t == rdtype]
            if not found:
                for rtype, value in records:
                    if rtype == "*" and isinstance(value, DnsError):
                        raise value
            return found
        return []

    async def txt(self, name: str) -> list[bytes]:
        out = []
        for v in self._answer(name, "TXT"):
            out.append(v if isinstance(v, bytes) else ("".join(v) if isinstance(v, list) else str(v)).encode())
        return out

    async def a(self, name: str) -> list[str]:
        return [str(v) for v in self._answer(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(v) for v in self._answer(name, "AAAA")]

    async def mx(self, domain: str) -> list[MxRecord]:
        out = []
        for v in self._answer(domain, "MX"):
            pref, host = v  # type: ignore[misc]
            out.append(MxRecord(int(pref), str(host).lower().rstrip(".")))
        return out

    async def ptr(self, address: str) -> list[str]:
        return [str(v).lower().rstrip(".") for v in self._answer(ipaddress.ip_address(address).reverse_pointer, "PTR")]
