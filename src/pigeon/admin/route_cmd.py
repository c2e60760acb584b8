"""``pigeon route ADDRESS``: where mail for an address goes, as Pigeon would route it right now.

Rules:
1. A local domain: the directory's answer: alias expansion (each target in order), the user's
   mailbox, or "unknown" (the server refuses it with 550 5.1.1). Remote targets of an alias are
   routed as in rule 2, indented under the target.
2. Any other domain: the route the relay agent would take this minute: the smarthost, or the MX
   list (preference, host, addresses, port) from live DNS through ``[dns] nameservers`` (else the
   system resolver), or the routing failure with its reply (null MX, NXDOMAIN, loop, DNS trouble).
   Domains in ``relay_domains`` are marked (we accept mail for them and pass it on).
3. For MX routing, the transport policies the relay would apply (``delivery.tlspolicy``): the
   MTA-STS policy fetched now (id, mode, mx patterns, max_age, or why there is none), and per MX
   host its rule: DANE with the TLSA records (with ``[dns] dnssec = true`` and an authenticated
   MX lookup), MTA-STS (whether the host matches the policy), or opportunistic TLS.
4. Exit code 0 when every destination is routable, 1 otherwise (or on a bad address), 2 on usage.

What can go wrong: the directory may be unreadable (exit 1 with ``pigeon: <message>``); DNS
failures are printed, not raised.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pigeon.admin.directory_cmds import open_directory
from pigeon.clocks import SystemClock
from pigeon.config import Config
from pigeon.core.address import Address, AddressError, parse_address
from pigeon.core.results import MailError
from pigeon.delivery.relay import RelaySettings
from pigeon.delivery.tlspolicy.engine import TransportPolicy
from pigeon.delivery.tlspolicy.reports import ReportBook
from pigeon.delivery.tlspolicy.sts import StsCache
from pigeon.net.tls import client_context
from pigeon.delivery.relay_route import IDNA_IMPLEMENTATION, Router, to_ascii
from pigeon.directory import Directory, DirectoryError
from pigeon.dns.resolver import DnsResolver


def _router(config: Config) -> Router:
    servers = [(e.host, e.port) for e in config.dns.nameservers]
    return Router(DnsResolver(servers, SystemClock()), RelaySettings.from_config(config).route_settings())


def _transport(config: Config, resolver: DnsResolver) -> TransportPolicy:
    """Rule 3: fetched live, with no cache written (the server keeps its own)."""
    clock = SystemClock()
    d = config.delivery
    sts = StsCache(resolver, clock, client_context(verify=True, cafile=d.tls_ca_file), None,
                   port=d.mta_sts_port) if d.mta_sts else None
    return TransportPolicy(resolver, sts, ReportBook(None, clock), clock, config.dns.dnssec)


async def _policy_lines(config: Config, router: Router, domain: str, hosts: list[str], indent: str) -> list[str]:
    resolver = router.resolver
    if not isinstance(resolver, DnsResolver):  # pragma: no cover - _router builds a DnsResolver
        return []
    transport = _transport(config, resolver)
    dp = await transport.for_domain(domain)
    lines = []
    policy = dp.sts.policy
    if not config.delivery.mta_sts:
        lines.append(f"{indent}  MTA-STS: not looked up ([delivery] mta_sts = false)")
    elif policy is not None:
        lines.append(f"{indent}  MTA-STS: policy id {dp.sts.id}: mode {policy.mode}, mx {', '.join(policy.mx) or '-'}, "
                     f"max_age {policy.max_age}")
    else:
        lines.append(f"{indent}  MTA-STS: no policy" + (f" ({dp.sts.error})" if dp.sts.error else ""))
    if not config.dns.dnssec:
        lines.append(f"{indent}  DANE: not used ([dns] dnssec = false)")
    elif not dp.mx_authenticated:
        lines.append(f"{indent}  DANE: not used (the MX lookup is not DNSSEC-authenticated)")
    for host in hosts:
        rule = await transport.for_host(dp, host)
        if rule.kind == "dane":
            tlsa = "; ".join(str(r) for r in rule.tlsa)
            lines.append(f"{indent}  {host}: DANE, TLSA _25._tcp.{host}: {tlsa}")
        elif rule.kind in ("dane-encrypt", "dane-error"):
            lines.append(f"{indent}  {host}: DANE: {rule.reason} ({'TLS required' if rule.kind == 'dane-encrypt' else 'host not used'})")
        elif rule.kind in ("sts-enforce", "sts-testing"):
            verdict = "matches the policy" if rule.permitted else (
                "NOT in the policy: not used (4.7.5)" if rule.kind == "sts-enforce" else "NOT in the policy (testing: used)")
            lines.append(f"{indent}  {host}: MTA-STS {rule.kind[4:]}: {verdict}; verified TLS required")
        else:
            lines.append(f"{indent}  {host}: opportunistic TLS")
    return lines


async def _remote_lines(router: Router, config: Config, address: Address, indent: str) -> tuple[list[str], bool]:
    domain = address.domain
    lines = []
    try:
        ascii_domain = to_ascii(domain)
    except ValueError:
        ascii_domain = domain
    note = " (relay domain: accepted here, passed on to its better MX)" if ascii_domain in config.relay_domains else ""
    shown = domain if ascii_domain == domain else f"{domain} = {ascii_domain} [{IDNA_IMPLEMENTATION}]"
    lines.append(f"{indent}{address}: remote, domain {shown}{note}")
    try:
        hosts = await router.route(domain)
    except MailError as exc:
        lines.append(f"{indent}  not routable: {exc.reply}")
        return lines, False
    if router.settings.smarthost is not None:
        lines.append(f"{indent}  via smarthost (MX records not used):")
    for h in hosts:
        kind = "implicit MX (no MX record; the domain's own address)" if h.implicit else f"MX {h.preference}"
        addrs = ", ".join(h.addresses) if h.addresses else f"no address ({h.error})"
        lines.append(f"{indent}  {kind} {h.name} port {h.port}: {addrs}")
    if router.settings.smarthost is None and not ascii_domain.startswith("["):
        lines.extend(await _policy_lines(config, router, ascii_domain, [h.name for h in hosts], indent))
    return lines, any(h.addresses for h in hosts)


async def _explain(config: Config, directory: Directory, address: Address) -> tuple[list[str], bool]:
    router = _router(config)
    if not directory.is_local_domain(address.domain):
        return await _remote_lines(router, config, address, "")
    if not directory.accepts(address):
        return [f"{address}: local domain, unknown recipient (refused with 550 5.1.1)"], False
    targets = directory.expand(address)
    if not targets:
        return [f"{address}: local, but every alias branch loops (fails with 5.4.6)"], False
    lines = [f"{address}: local domain {address.domain}"]
    ok = True
    for t in targets:
        if directory.is_local_domain(t.domain):
            if directory.user_exists(t):
                path = config.data_dir / "mail" / t.domain / t.local.lower()
                lines.append(f"  → {t}: mailbox {path}")
            else:
                lines.append(f"  → {t}: unknown local user (fails with 550 5.1.1)")
                ok = False
        else:
            more, routable = await _remote_lines(router, config, t, "  → ")
            lines.extend(more)
            ok = ok and routable
    return lines, ok


def route(args: argparse.Namespace, config: Config) -> int:
    try:
        address = parse_address(args.address.strip(), utf8=True)
    except AddressError as exc:
        print(f"pigeon: {args.address!r}: {exc}", file=sys.stderr)
        return 1
    try:
        with open_directory(config) as directory:
            lines, ok = asyncio.run(_explain(config, directory, address))
    except DirectoryError as exc:
        print(f"pigeon: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0 if ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    """Add ``pigeon route ADDRESS`` to the command line."""
    p = subparsers.add_parser("route", parents=[common],
                              help="explain where mail for an address goes (local, aliases, MX list)")
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(handler=route)
