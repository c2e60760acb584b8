"""The ``[inbound]`` section: mail authentication, blocklists, milters and DMARC reports on
port 25 (issue 16; ``pigeon.inbound``).

Rules:
1. Every check is on by default (``spf``, ``dkim``, ``dmarc``, ``arc``, ``reports``); a key set
   to ``false`` turns one off. Only the ``smtp`` service (port 25) is checked: submission and
   ``pigeon sendmail`` never are.
2. ``trusted_networks`` (CIDR list, default none) skip every check; loopback is NOT exempt.
3. ``dnsbl`` zones are DNS names (default none); ``milters`` are ``inet:host:port`` or
   ``unix:/path`` (default none), asked in order.
4. ``milter_default_action`` says what happens when a milter cannot be reached or breaks the
   protocol: ``tempfail`` (``451 4.7.1``, Postfix's default) or ``accept``.

What can go wrong: a bad value raises ``ConfigError`` naming ``inbound.<key>``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from pigeon.config.reader import ConfigError, Table
from pigeon.core.address import is_valid_domain

MilterDefault = Literal["tempfail", "accept"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Postfix's milter_connect_timeout is 30 s, milter_command_timeout 30 s and
# milter_content_timeout 300 s; rspamd answers in milliseconds, so shorter defaults keep a hung
# filter from holding the SMTP client past its own DATA timeout (RFC 5321 §4.5.3.2.6: 10 min).
DEFAULT_MILTER_CONNECT_TIMEOUT = 10.0
DEFAULT_MILTER_COMMAND_TIMEOUT = 30.0
DEFAULT_MILTER_CONTENT_TIMEOUT = 120.0
# A DNSBL answer that has not come within this is treated as "not listed" (rule: a lookup
# failure never refuses); Postfix's postscreen_dnsbl_timeout is 10 s.
DEFAULT_DNSBL_TIMEOUT = 10.0
MAX_DNSBL_ZONES = 16  # each zone is one query per connection: bounded work per client
MAX_MILTERS = 8


@dataclass(frozen=True, slots=True)
class MilterEndpoint:
    """Where a milter listens: ``inet:host:port`` or ``unix:/path``."""

    spec: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> MilterEndpoint:
        kind, sep, rest = text.strip().partition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected inet:host:port or unix:/path")
        if kind in ("unix", "local"):
            if not rest.startswith("/"):
                raise ValueError(f"{text!r}: a unix socket path must be absolute")
            return cls(text.strip(), path=rest)
        if kind in ("inet", "inet6"):
            host, sep, port = rest.rpartition(":")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
                raise ValueError(f"{text!r}: expected inet:host:port")
            return cls(text.strip(), host=host, port=int(port))
        raise ValueError(f"{text!r}: unknown milter socket kind {kind!r} (inet or unix)")


@dataclass(frozen=True, slots=True)
class InboundConfig:
    spf: bool = True
    dkim: bool = True
    dmarc: bool = True
    arc: bool = True
    # Our own domains: From: a local domain that does not pass DMARC → 550 5.7.1 (issue 16).
    reject_local_spoofing: bool = True
    trusted_networks: tuple[IpNetwork, ...] = ()
    trusted_arc_sealers: tuple[str, ...] = ()
    dnsbl: tuple[str, ...] = ()
    dnsbl_timeout: float = DEFAULT_DNSBL_TIMEOUT
    milters: tuple[MilterEndpoint, ...] = ()
    milter_default_action: MilterDefault = "tempfail"
    milter_connect_timeout: float = DEFAULT_MILTER_CONNECT_TIMEOUT
    milter_command_timeout: float = DEFAULT_MILTER_COMMAND_TIMEOUT
    milter_content_timeout: float = DEFAULT_MILTER_CONTENT_TIMEOUT
    # DMARC aggregate reports (RFC 7489 §7.2): record each evaluation, send once a day.
    reports: bool = True
    report_org: str = ""  # <org_name> in reports; "" = the hostname

    def checks_anything(self) -> bool:
        return self.spf or self.dkim or self.dmarc or self.arc or bool(self.milters) or bool(self.dnsbl)


def _network(text: str) -> IpNetwork:
    return ipaddress.ip_network(text.strip(), strict=False)


def _zone(table: Table, name: str, value: str) -> str:
    folded = value.strip().lower().rstrip(".")
    if not folded or not is_valid_domain(folded):
        raise table.error(name, f"{value!r} is not a valid DNS zone")
    return folded


def parse_inbound(top: Table) -> InboundConfig:
    t = top.table("inbound")
    d = InboundConfig()
    networks = t.mapped("trusted_networks", t.string_list("trusted_networks"), _network)
    sealers = tuple(_zone(t, "trusted_arc_sealers", s) for s in t.string_list("trusted_arc_sealers"))
    zones = tuple(_zone(t, "dnsbl", s) for s in t.string_list("dnsbl", allow_single=True))
    if len(zones) > MAX_DNSBL_ZONES:
        raise t.error("dnsbl", f"at most {MAX_DNSBL_ZONES} zones")
    milters = t.mapped("milters", t.string_list("milters", allow_single=True), MilterEndpoint.parse)
    if len(milters) > MAX_MILTERS:
        raise t.error("milters", f"at most {MAX_MILTERS} milters")
    action = t.string("milter_default_action", d.milter_default_action)
    default_action: MilterDefault
    if action == "tempfail":
        default_action = "tempfail"
    elif action == "accept":
        default_action = "accept"
    else:
        raise t.error("milter_default_action", f'must be "tempfail" or "accept", got {action!r}')
    report_org = t.string("report_org", d.report_org)
    if report_org and (not report_org.isprintable() or "<" in report_org or "&" in report_org):
        raise t.error("report_org", "must be printable text without < or &")
    cfg = InboundConfig(
        spf=t.boolean("spf", d.spf),
        dkim=t.boolean("dkim", d.dkim),
        dmarc=t.boolean("dmarc", d.dmarc),
        arc=t.boolean("arc", d.arc),
        reject_local_spoofing=t.boolean("reject_local_spoofing", d.reject_local_spoofing),
        trusted_networks=networks,
        trusted_arc_sealers=sealers,
        dnsbl=zones,
        dnsbl_timeout=t.duration("dnsbl_timeout", d.dnsbl_timeout),
        milters=milters,
        milter_default_action=default_action,
        milter_connect_timeout=t.duration("milter_connect_timeout", d.milter_connect_timeout),
        milter_command_timeout=t.duration("milter_command_timeout", d.milter_command_timeout),
        milter_content_timeout=t.duration("milter_content_timeout", d.milter_content_timeout),
        reports=t.boolean("reports", d.reports),
        report_org=report_org,
    )
    t.finish()
    return cfg


__all__ = ["ConfigError", "InboundConfig", "MilterEndpoint", "parse_inbound"]
