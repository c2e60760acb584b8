"""``pigeon dkim list|rotate|retire`` and ``pigeon dns DOMAIN [--check]``.

Rules:
1. ``dkim list`` prints one line per published key: domain, selector, algorithm, and whether
   it signs. Keys live in ``data_dir/dkim`` (``mailauth.keys``); the running server reads a
   rotation at its next message (no restart, no control call needed).
2. ``dkim rotate DOMAIN`` makes a new pair that signs from now on; the old pair stays published
   until ``dkim retire DOMAIN SELECTOR``. Both print the records to publish or remove.
3. ``dns DOMAIN`` prints the zone-file lines of ``mailauth.dnsrecords`` (making the domain's keys
   first if it has none). ``--check`` asks the live DNS through ``[dns] nameservers`` (else the
   system resolver), prints ``ok``/``missing``/``differs`` with what was found per record, and
   exits 1 when a required record is missing or differs (a DNS error counts as missing).
4. The domain must be local (config file or directory): exit 1 otherwise.

What can go wrong: an unreadable data directory (exit 1, ``pigeon: ...``); DNS timeouts are
reported per record, never raised.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from pigeon.admin.directory_cmds import open_directory
from pigeon.config import Config
from pigeon.directory import DirectoryError
from pigeon.mailauth.dnsrecords import WantedRecord, compare, wanted_records, zone_text
from pigeon.mailauth.keys import KeyStore, check_domain
from pigeon.web.mtasts import policy_text

CHECK_TIMEOUT = 5.0  # seconds per lookup: an interactive command should not hang on a dead server


def key_store(config: Config) -> KeyStore:
    return KeyStore(config.data_dir / "dkim")


def _fail(message: str) -> int:
    print(f"pigeon: {message}", file=sys.stderr)
    return 1


def _local(config: Config, domain: str) -> str | None:
    try:
        with open_directory(config) as d:
            if d.is_local_domain(domain):
                return check_domain(domain)
    except DirectoryError as exc:
        _fail(str(exc))
        return None
    _fail(f"{domain} is not a local domain")
    return None


def _local_domains(config: Config) -> list[str]:
    with open_directory(config) as d:
        return d.domains()


def cmd_dkim_list(args: argparse.Namespace, config: Config) -> int:
    store = key_store(config)
    try:
        domains = sorted(set(_local_domains(config)) | set(store.domains()))
        for domain in domains:
            signing = set(store.signing_selectors(domain))
            for key in store.published(domain):
                state = "signing" if key.selector in signing else "published"
                print(f"{domain}\t{key.selector}\t{key.algorithm}\t{state}")
    except (OSError, ValueError, DirectoryError) as exc:
        return _fail(str(exc))
    return 0


def cmd_dkim_rotate(args: argparse.Namespace, config: Config) -> int:
    domain = _local(config, args.domain)
    if domain is None:
        return 1
    store = key_store(config)
    try:
        new = store.rotate(domain)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    print(f"{domain}: new signing keys {', '.join(new)}; publish them before mail goes out:")
    for key in store.published(domain):
        if key.selector in new:
            print(WantedRecord(f"{key.selector}._domainkey.{domain}.", "TXT", key.txt_record(), True).zone_line())
    return 0


def cmd_dkim_retire(args: argparse.Namespace, config: Config) -> int:
    domain = _local(config, args.domain)
    if domain is None:
        return 1
    try:
        key_store(config).retire(domain, args.selector)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    print(f"{domain}: key {args.selector} retired; remove {args.selector}._domainkey.{domain}. from the DNS")
    return 0


def records_for(config: Config, domain: str) -> list[WantedRecord]:
    store = key_store(config)
    store.ensure(domain)
    signing = set(store.signing_selectors(domain))
    dkim = [(k.selector, k.txt_record(), k.selector in signing) for k in store.published(domain)]
    listen = config.listen
    services = {"submissions": bool(listen.submissions), "submission": bool(listen.submission),
                "imaps": bool(listen.imaps), "imap": bool(listen.imap),
                "pop3s": bool(listen.pop3s)}
    return wanted_records(domain, config.hostname, dkim, config.dns.public_ips, services,
                          mta_sts=policy_text(config.mta_sts))  # the policy the web endpoint serves


def _resolver(config: Config) -> dns.asyncresolver.Resolver:
    if config.dns.nameservers:
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver(e.host, e.port) for e in config.dns.nameservers]
    else:
        r = dns.asyncresolver.Resolver()
    r.lifetime = CHECK_TIMEOUT
    return r


async def _lookup(r: dns.asyncresolver.Resolver, name: str, rtype: str) -> list[str]:
    """The values at ``name`` in ``WantedRecord.value`` form; [] for none; raises LookupError."""
    try:
        answer = await r.resolve(name, rtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.DNSException, OSError) as exc:
        raise LookupError(f"DNS error: {exc}") from None
    if answer.rrset is None:
        return []
    out = []
    for rd in answer.rrset:
        if rtype == "TXT":
            out.append(b"".join(rd.strings).decode("utf-8", "replace"))
        elif rtype == "MX":
            out.append(f"{rd.preference} {str(rd.exchange).rstrip('.') or '.'}")
        elif rtype == "SRV":
            out.append(f"{rd.priority} {rd.weight} {rd.port} {str(rd.target).rstrip('.') or '.'}")
        elif rtype == "CNAME":
            out.append(str(rd.target).rstrip("."))
        else:
            out.append(str(rd.address))
    return out


async def check(config: Config, records: list[WantedRecord]) -> tuple[list[str], bool]:
    """Rule 3: the report lines, and whether every required record is right."""
    r = _resolver(config)
    good = True
    lines = []
    for rec in records:
        try:
            found = await _lookup(r, rec.owner, rec.rtype)
            status, shown = compare(rec, found)
        except LookupError as exc:
            status, shown = "missing", str(exc)
        if status != "ok" and rec.required:
            good = False
        need = "required" if rec.required else "optional"
        lines.append(f"{status:<8} {rec.owner} {rec.rtype} ({need}): found {shown}")
    return lines, good


def cmd_dns(args: argparse.Namespace, config: Config) -> int:
    domain = _local(config, args.domain)
    if domain is None:
        return 1
    try:
        records = records_for(config, domain)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    if not args.check:
        print(f"; records for {domain} (Pigeon at {config.hostname})")
        print(zone_text(records), end="")
        return 0
    lines, good = asyncio.run(check(config, records))
    for line in lines:
        print(line)
    return 0 if good else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    dkim = subparsers.add_parser("dkim", parents=[common], help="DKIM signing keys of the local domains")
    ds = dkim.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)
    p = ds.add_parser("list", parents=[common], help="list the keys (signing, or kept published)")
    p.set_defaults(handler=cmd_dkim_list)
    p = ds.add_parser("rotate", parents=[common], help="make a new signing pair; the old one stays published")
    p.add_argument("domain")
    p.set_defaults(handler=cmd_dkim_rotate)
    p = ds.add_parser("retire", parents=[common], help="stop publishing a key that no longer signs")
    p.add_argument("domain")
    p.add_argument("selector")
    p.set_defaults(handler=cmd_dkim_retire)
    p = subparsers.add_parser("dns", parents=[common], help="the DNS records a local domain should publish")
    p.add_argument("domain")
    p.add_argument("--check", action="store_true", help="compare with the live DNS; exit 1 when a required one is wrong")
    p.set_defaults(handler=cmd_dns)
