"""What the port-25 checks need of the mail authentication package and of DNS, as Protocols.

``pigeon.mailauth`` (SPF, DKIM, DMARC, ARC: pure decisions over a resolver) is below this
package; the composition root (``app.services``) hands ``Verdicts`` its functions through
``AuthChecks``, so that the integration is typed against the interface alone and is testable
with fakes.

Rules:
1. The result values are read through these read-only Protocols: any object with the
   attributes fits (``pigeon.mailauth``'s frozen dataclasses do).
2. ``DnsblDns`` is the part of ``pigeon.dns.resolver.DnsResolver`` the blocklists use (A and
   TXT lookups; the resolver's cache and errors).

What can go wrong: nothing here runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class SpfOutcome(Protocol):
    @property
    def result(self) -> str: ...  # pass fail softfail neutral none temperror permerror
    @property
    def identity(self) -> str: ...  # "mailfrom" | "helo"
    @property
    def domain(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def explanation(self) -> str: ...


class DkimOutcome(Protocol):
    @property
    def result(self) -> str: ...  # pass fail neutral policy none temperror permerror
    @property
    def domain(self) -> str: ...
    @property
    def selector(self) -> str: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def reason(self) -> str: ...


class ArcOutcome(Protocol):
    @property
    def result(self) -> str: ...  # pass fail none
    @property
    def sealers(self) -> tuple[str, ...]: ...
    @property
    def reason(self) -> str: ...


class DmarcOutcome(Protocol):
    @property
    def result(self) -> str: ...  # pass fail none temperror permerror
    @property
    def from_domain(self) -> str: ...
    @property
    def org_domain(self) -> str: ...
    @property
    def policy(self) -> str | None: ...  # none quarantine reject (None without a record)
    @property
    def disposition(self) -> str: ...  # none quarantine reject (after pct)
    @property
    def spf_aligned(self) -> bool: ...
    @property
    def dkim_aligned(self) -> bool: ...
    @property
    def record(self) -> object: ...  # the parsed record (rua in ``rua``), or None
    @property
    def reason(self) -> str: ...


class AuthChecks(Protocol):
    """The functions of ``pigeon.mailauth`` the verdict calls (``dns`` is bound by the root)."""

    async def check_spf(self, ip: str, mail_from: str, helo: str) -> SpfOutcome: ...

    def spf_cached(self, mail_from: str, helo: str) -> bool: ...
    # ^ the SPF record of the identity is in the DNS cache now (the check would most likely not
    #   wait for the network), so it may run inline at the end of the message

    async def verify_dkim(self, message: bytes, prefer_domain: str | None, crlf: bool = False) -> Sequence[DkimOutcome]: ...
    # ^ ``prefer_domain`` (the header From's) is verified first when there are many signatures;
    #   ``crlf``: the caller vouches that every line ends in CRLF (no bare CR or LF)

    async def verify_arc(self, message: bytes) -> ArcOutcome: ...

    async def check_dmarc(self, header_from_domain: str, spf: SpfOutcome,
                          dkim: Sequence[DkimOutcome]) -> DmarcOutcome: ...

    def header_from_domain(self, headers: bytes) -> str | None: ...

    def authentication_results(self, authserv_id: str, spf: SpfOutcome | None,
                               dkim: Sequence[DkimOutcome], dmarc: DmarcOutcome | None,
                               arc: ArcOutcome | None) -> bytes: ...
    # ^ the whole ``Authentication-Results:`` field, CRLF-terminated (RFC 8601)

    def received_spf(self, spf: SpfOutcome, receiver: str, client_ip: str, helo: str) -> bytes: ...
    # ^ the whole ``Received-SPF:`` field, CRLF-terminated (RFC 7208 §9.1)

    def is_ours(self, field_value: str, authserv_id: str) -> bool: ...
    # ^ whether an Authentication-Results value claims ``authserv_id`` (RFC 8601 §5)


class DnsCache(Protocol):
    """Whether the resolver's cache answers a lookup now (``DnsResolver.cached``)."""

    def cached(self, name: str, rdtype: str) -> bool: ...


class DnsblDns(Protocol):
    async def a(self, name: str) -> list[str]: ...

    async def txt(self, name: str) -> list[bytes]: ...
