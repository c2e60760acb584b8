"""DNS: the ``Resolver`` seam used by mail routing, its errors, and the real implementation."""

from pigeon.dns.resolver import (
    DnsError,
    DnsPermError,
    DnsResolver,
    DnsTempError,
    MxRecord,
    NoSuchDomain,
    Resolver,
)

__all__ = ["DnsError", "DnsPermError", "DnsResolver", "DnsTempError", "MxRecord", "NoSuchDomain", "Resolver"]
