"""A resolver for unit tests: zones written as Python dicts (DESIGN.md: fakes only for DNS, clock).

Rules:
1. ``mx`` and ``hosts`` map a name to its records, or to a ``DnsError`` to raise. A name in
   neither map is NXDOMAIN (``NoSuchDomain``); a name in only one map has no records of the
   other type (``[]``), as in real DNS.
2. ``queries`` records every question asked, in order, so tests can count lookups.
3. ``txt`` answers from ``txt`` (name → records), ``secure`` from ``secure`` ((name, type) →
   ``SecureAnswer``); a name missing there has no such records (``[]`` / an unauthenticated
   empty answer).
"""

from __future__ import annotations

from collections.abc import Mapping

from pigeon.dns.resolver import DnsError, MxRecord, NoSuchDomain, SecureAnswer


class FakeResolver:
    def __init__(self, mx: Mapping[str, list[MxRecord] | DnsError] | None = None,
                 hosts: Mapping[str, list[str] | DnsError] | None = None,
                 txt: Mapping[str, list[str] | DnsError] | None = None,
                 secure: Mapping[tuple[str, str], SecureAnswer | DnsError] | None = None) -> None:
        self.mx_records: dict[str, list[MxRecord] | DnsError] = dict(mx or {})
        self.hosts: dict[str, list[str] | DnsError] = dict(hosts or {})
        self.txt_records: dict[str, list[str] | DnsError] = dict(txt or {})
        self.secure_records: dict[tuple[str, str], SecureAnswer | DnsError] = dict(secure or {})
        self.queries: list[tuple[str, str]] = []

    def _known(self, name: str) -> bool:
        return name in self.mx_records or name in self.hosts

    async def mx(self, domain: str) -> list[MxRecord]:
        name = domain.lower().rstrip(".")
        self.queries.append((name, "MX"))
        value = self.mx_records.get(name)
        if isinstance(value, DnsError):
            raise value
        if value is None:
            if not self._known(name):
                raise NoSuchDomain(f"{name}: no such domain (NXDOMAIN)")
            return []
        return list(value)

    async def addresses(self, host: str) -> list[str]:
        name = host.lower().rstrip(".")
        self.queries.append((name, "A/AAAA"))
        value = self.hosts.get(name)
        if isinstance(value, DnsError):
            raise value
        if value is None:
            if not self._known(name):
                raise NoSuchDomain(f"{name}: no such domain (NXDOMAIN)")
            return []
        return list(value)

    async def txt(self, name: str) -> list[bytes]:
        name = name.lower().rstrip(".")
        self.queries.append((name, "TXT"))
        value = self.txt_records.get(name, [])
        if isinstance(value, DnsError):
            raise value
        return [record.encode() for record in value]

    async def secure(self, name: str, rdtype: str) -> SecureAnswer:
        name = name.lower().rstrip(".")
        self.queries.append((name, rdtype + "+AD"))
        value = self.secure_records.get((name, rdtype), SecureAnswer((), False))
        if isinstance(value, DnsError):
            raise value
        return value
