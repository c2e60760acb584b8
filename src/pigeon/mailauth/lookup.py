"""What the mail authentication checks ask of DNS: the ``MailAuthDns`` seam.

Rules:
1. ``txt``, ``a``, ``aaaa``, ``mx`` and ``ptr`` have three outcomes that the checks tell apart
   (RFC 7208 §2.7, §4.4, §4.6.4): records (a non-empty list); the name exists without records of
   the type (``[]``); the name does not exist (``NoSuchDomain``). Anything temporary (SERVFAIL,
   timeout) raises ``DnsTempError``; any other permanent failure (a name that cannot be a DNS
   name, an answer over the size cap) raises ``DnsPermError``.
2. ``pigeon.dns.resolver.DnsResolver`` implements this protocol with its cache; tests pass a fake
   zone. The checks never open a socket themselves.
3. ``txt`` returns each record's character-strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2),
   as bytes: what they contain is for the parser that reads them to judge.
"""

from __future__ import annotations

from typing import Protocol

from pigeon.dns.resolver import DnsError, DnsPermError, DnsTempError, MxRecord, NoSuchDomain

__all__ = ["DnsError", "DnsPermError", "DnsTempError", "MailAuthDns", "MxRecord", "NoSuchDomain"]


class MailAuthDns(Protocol):
    """The DNS lookups of SPF, DKIM, DMARC and ARC (rule 1)."""

    async def txt(self, name: str) -> list[bytes]: ...

    async def a(self, name: str) -> list[str]: ...

    async def aaaa(self, name: str) -> list[str]: ...

    async def mx(self, domain: str) -> list[MxRecord]: ...

    async def ptr(self, address: str) -> list[str]: ...
