"""Reading ``pigeon.toml`` into a validated ``Config``, and finding which file to read.

Rules:
1. One TOML file, parsed with the standard library's ``tomllib``. Unknown keys and unknown
   sections are errors (a typo must not silently fall back to a default).
2. Relative ``data_dir`` / ``log_file`` paths resolve against the directory of the config file
   (for the embedded default: the current directory), and ``~`` expands; the result is absolute.
3. Domains are stored lower-cased without a trailing dot; a domain may not be both local
   (``domains``) and relayed (``relay_domains``); address literals are not domains.
4. ``find_config`` order: the ``--config`` value, then ``$PIGEON_CONFIG``, then
   ``/etc/pigeon/pigeon.toml`` if it exists, then ``DEFAULT_CONFIG_TOML`` (the embedded default,
   a development setup on 127.0.0.1 with its data in ``./pigeon-data`` or ``$PIGEON_HOME``).
   An explicitly named file that does not exist is an error, never a silent fall-through.

What can go wrong: a missing or unreadable file, bad TOML, a wrong type, a bad value or an
unknown key: each raises ``ConfigError`` whose message starts ``<file>: <dotted.key>: ``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pigeon.config.model import (
    AuthConfig,
    BareNewline,
    Config,
    DeliveryConfig,
    DnsConfig,
    Endpoint,
    ImapConfig,
    Pop3Config,
    Limits,
    Listen,
    QueueConfig,
    QueueFlush,
    SmtpConfig,
    SubmissionConfig,
    TlsConfig,
    TlsLevel,
)
from pigeon.auth.throttle import HARD_MAX_IP_FAILURES, ThrottleSettings
from pigeon.config.inbound import parse_inbound
from pigeon.config.reader import ConfigError, Table
from pigeon.config.web import check_web, parse_acme, parse_mta_sts, parse_reports
from pigeon.core.address import AddressError, is_valid_domain, parse_address

SYSTEM_CONFIG_PATH = Path("/etc/pigeon/pigeon.toml")
EMBEDDED_SOURCE = "<embedded default>"

# RFC 5321 §4.5.3.1.6: a server must accept text lines of 1000 octets (CRLF included); the
# configured hard limit may relax this, never tighten it.
MIN_LINE_LENGTH = 1000
# RFC 5321 §4.5.3.1.8: a server MUST be able to take at least 100 recipients per message.
MIN_RECIPIENTS = 100
# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; "220 " + hostname + " " + CRLF must fit.
MAX_GREETING = 400

DEFAULT_CONFIG_TOML = """\
# Pigeon's embedded default configuration: a development setup, everything on 127.0.0.1.
# Used only when no --config, no $PIGEON_CONFIG and no /etc/pigeon/pigeon.toml is found.
# Copy it to a file and edit it for real use (`pigeon check-config` prints it).

hostname = "localhost"
data_dir = "pigeon-data"          # relative: against the current directory ($PIGEON_HOME overrides)
domains = ["example.test"]
relay_domains = []
# postmaster = "you@example.test" # default: the first user created
# log_file = "pigeon.log"         # default: standard error
# log_syslog = false              # true: also to syslog, facility mail
# user = "pigeon"                 # started as root: bind the ports, then run as this user
# group = "pigeon"                # default: the user's own group

[listen]
smtp = ["127.0.0.1:2525"]
submission = ["127.0.0.1:2587"]
submissions = ["127.0.0.1:2465"]
imap = ["127.0.0.1:2143"]
imaps = ["127.0.0.1:2993"]
pop3 = ["127.0.0.1:2110"]
pop3s = ["127.0.0.1:2995"]
metrics = ["127.0.0.1:9125"]       # Prometheus /metrics and /healthz
# http = ["0.0.0.0:80"]            # ACME http-01, MTA-STS, autoconfig (see docs/web.md)
# https = ["0.0.0.0:443"]

[auth]
allow_plaintext_on_loopback = true   # development only: AUTH without TLS on 127.0.0.1

[limits]
max_message_size = "50M"
max_recipients = 1000

[queue]
retry_schedule = ["5m", "10m", "20m", "40m", "1h"]
max_lifetime = "5d"
delay_warning = "4h"
flush = "filesystem"

[smtp]
recipient_delimiter = "+"
bare_newline = "reject"

[inbound]                            # port 25's checks: SPF, DKIM, DMARC, ARC on by default
# trusted_networks = ["192.0.2.0/24"]   # not checked (default: none; loopback is not exempt)
# dnsbl = ["zen.example.org"]           # DNS blocklists, asked at connect, 554 at EHLO
# milters = ["inet:127.0.0.1:11332"]    # e.g. rspamd's proxy worker in milter mode
"""

# [smtp] (and [imap], [pop3]) processes: more processes than cores only adds context switches; 64 is far above any
# machine this is meant for and bounds the children one setting can start.
MAX_SMTP_PROCESSES = 64
_LISTEN_SERVICES = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s",
                    "http", "https", "metrics")
_BARE_NEWLINE: tuple[BareNewline, ...] = ("reject", "normalize")
_TLS_LEVELS: dict[str, TlsLevel] = {"may": "may", "encrypt": "encrypt", "verify": "verify"}


def _domain(table: Table, name: str, value: str) -> str:
    folded = value.strip().lower().rstrip(".")
    if not folded or folded.startswith("[") or not is_valid_domain(folded):
        raise table.error(name, f"{value!r} is not a valid domain name")
    return folded


def _domain_list(table: Table, name: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in table.string_list(name):
        folded = _domain(table, name, value)
        if folded not in out:
            out.append(folded)
    return tuple(out)


# POSIX portable user and group names (useradd's NAME_REGEX on Debian), at most 32 characters
# (the utmp limit that useradd enforces).
_ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,30}[$]?")


def _account_name(top: Table, name: str) -> str | None:
    value = top.opt_string(name)
    if value is None:
        return None
    if not _ACCOUNT_NAME.fullmatch(value):
        raise top.error(name, f"{value!r} is not a user or group name")
    if value == "root":
        raise top.error(name, "root is what the server stops being; leave it out to stay root")
    return value


def _path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return path.absolute()


def _listen(top: Table) -> Listen:
    table = top.table("listen")
    values: dict[str, tuple[Endpoint, ...]] = {}
    for service in _LISTEN_SERVICES:
        texts = table.string_list(service, allow_single=True)
        endpoints = table.mapped(service, texts, Endpoint.parse)
        if len(set(endpoints)) != len(endpoints):
            raise table.error(service, "the same address is listed twice")
        values[service] = endpoints
    table.finish()
    seen: dict[Endpoint, str] = {}
    for service, endpoints in values.items():
        for endpoint in endpoints:
            if endpoint in seen:
                raise table.error(service, f"{endpoint} is already used by listen.{seen[endpoint]}")
            seen[endpoint] = service
    return Listen(**values)


def _limits(top: Table) -> Limits:
    t = top.table("limits")
    d = Limits()
    limits = Limits(
        max_message_size=t.size("max_message_size", d.max_message_size),
        max_recipients=t.integer("max_recipients", d.max_recipients, minimum=MIN_RECIPIENTS),
        max_connections=t.integer("max_connections", d.max_connections, minimum=1),
        max_connections_per_ip=t.integer("max_connections_per_ip", d.max_connections_per_ip, minimum=1),
        session_timeout=t.duration("session_timeout", d.session_timeout),
        line_timeout=t.duration("line_timeout", d.line_timeout),
        max_errors=t.integer("max_errors", d.max_errors, minimum=1),
        max_received_headers=t.integer("max_received_headers", d.max_received_headers, minimum=1),
        max_line_length=t.size("max_line_length", d.max_line_length, minimum=MIN_LINE_LENGTH),
    )
    t.finish()
    if limits.max_connections_per_ip > limits.max_connections:
        raise t.error(
            "max_connections_per_ip", f"must not exceed limits.max_connections ({limits.max_connections})"
        )
    return limits


def _auth(top: Table) -> AuthConfig:
    t = top.table("auth")
    d = ThrottleSettings()
    throttle = ThrottleSettings(
        ip_max_failures=t.integer("ip_max_failures", d.ip_max_failures, minimum=1,
                                  maximum=HARD_MAX_IP_FAILURES),
        account_ip_max_failures=t.integer("account_ip_max_failures", d.account_ip_max_failures, minimum=1),
        account_slowdown_after=t.integer("account_slowdown_after", d.account_slowdown_after, minimum=1),
        failure_delay=t.duration("failure_delay", d.failure_delay, exclusive_min=False),
        max_failure_delay=t.duration("max_failure_delay", d.max_failure_delay, exclusive_min=False),
        block_time=t.duration("block_time", d.block_time),
    )
    try:
        throttle.validate()
    except ValueError as exc:
        raise t.error("failure_delay", str(exc)) from None
    defaults = AuthConfig()
    auth = AuthConfig(
        allow_plaintext_on_loopback=t.boolean("allow_plaintext_on_loopback", False),
        smtp_auth=t.boolean("smtp_auth", False),
        throttle=throttle,
        credential_cache_ttl=t.duration("credential_cache_ttl", defaults.credential_cache_ttl,
                                        exclusive_min=False),
        credential_cache_size=t.integer("credential_cache_size", defaults.credential_cache_size, minimum=1),
    )
    t.finish()
    return auth


def _tls(top: Table, base_dir: Path) -> TlsConfig:
    t = top.table("tls")
    cert, key = t.opt_string("cert"), t.opt_string("key")
    if (cert is None) != (key is None):
        raise t.error("cert" if cert is None else "key", "cert and key must be set together")
    tls = TlsConfig(cert=_path(cert, base_dir) if cert else None, key=_path(key, base_dir) if key else None)
    t.finish()
    return tls


def _submission(top: Table) -> SubmissionConfig:
    t = top.table("submission")
    d = SubmissionConfig()
    sub = SubmissionConfig(
        messages_per_hour=t.integer("messages_per_hour", d.messages_per_hour, minimum=0),
        recipients_per_message=t.integer("recipients_per_message", d.recipients_per_message, minimum=0),
    )
    t.finish()
    return sub


def _dns(top: Table) -> DnsConfig:
    t = top.table("dns")
    texts = t.string_list("nameservers", allow_single=True)
    # A resolver must be reached by address: naming it would need a resolver first.
    servers = t.mapped("nameservers", texts, lambda s: Endpoint.parse(s, default_port=53, ip_only=True))
    public = t.mapped("public_ips", t.string_list("public_ips", allow_single=True),
                      lambda s: str(ipaddress.ip_address(s.strip())))
    dnssec = t.boolean("dnssec", DnsConfig().dnssec)
    t.finish()
    return DnsConfig(nameservers=servers, public_ips=public, dnssec=dnssec)


def _queue(top: Table) -> QueueConfig:
    t = top.table("queue")
    d = QueueConfig()
    queue = QueueConfig(
        retry_schedule=t.duration_list("retry_schedule", d.retry_schedule),
        max_lifetime=t.duration("max_lifetime", d.max_lifetime),
        delay_warning=t.duration("delay_warning", d.delay_warning, exclusive_min=False),
        jitter=t.number("jitter", d.jitter, minimum=0.0, maximum=0.5),
        notify_postmaster=t.boolean("notify_postmaster", d.notify_postmaster),
        flush=_queue_flush(t, d.flush),
    )
    t.finish()
    return queue


def _queue_flush(t: Table, default: QueueFlush) -> QueueFlush:
    value = t.string("flush", default)
    if value == "filesystem":
        return "filesystem"
    if value == "file":
        return "file"
    raise t.error("flush", f'must be "filesystem" or "file", got {value!r}')


def _delivery(top: Table, base_dir: Path) -> DeliveryConfig:
    t = top.table("delivery")
    d = DeliveryConfig()
    remote_port = t.integer("remote_port", d.remote_port, minimum=1, maximum=65535)
    smarthost = t.opt_string("smarthost")
    if smarthost is not None:
        try:
            Endpoint.parse(smarthost, default_port=remote_port)
        except ValueError as exc:
            raise t.error("smarthost", str(exc)) from None
        smarthost = smarthost.strip()
    user = t.opt_string("smarthost_user")
    password_file = t.opt_string("smarthost_password_file")
    if (user is None) != (password_file is None):
        raise t.error("smarthost_user" if user is None else "smarthost_password_file",
                      "smarthost_user and smarthost_password_file must be set together")
    tls_mode = t.string("smarthost_tls", d.smarthost_tls)
    if tls_mode not in ("required", "opportunistic"):
        raise t.error("smarthost_tls", f"must be required or opportunistic, got {tls_mode!r}")
    verify = t.boolean("smarthost_tls_verify", d.smarthost_tls_verify)
    policy_table = t.table("tls_policy")
    policy: list[tuple[str, TlsLevel]] = []
    for name in policy_table.keys():
        level = policy_table.string(name, "may")
        if level not in _TLS_LEVELS:
            raise policy_table.error(name, f"must be one of {', '.join(_TLS_LEVELS)}, got {level!r}")
        policy.append((_domain(policy_table, name, name), _TLS_LEVELS[level]))
    policy_table.finish()
    ca_file = t.opt_string("tls_ca_file")
    mta_sts = t.boolean("mta_sts", d.mta_sts)
    mta_sts_port = t.integer("mta_sts_port", d.mta_sts_port, minimum=1, maximum=65535)
    t.finish()
    return DeliveryConfig(remote_port=remote_port, smarthost=smarthost, smarthost_user=user,
                          smarthost_password_file=_path(password_file, base_dir) if password_file else None,
                          smarthost_tls="required" if tls_mode == "required" else "opportunistic",
                          smarthost_tls_verify=verify, tls_policy=tuple(policy),
                          tls_ca_file=_path(ca_file, base_dir) if ca_file else None,
                          mta_sts=mta_sts, mta_sts_port=mta_sts_port)


def _smtp(top: Table) -> SmtpConfig:
    t = top.table("smtp")
    d = SmtpConfig()
    delimiter = t.string("recipient_delimiter", d.recipient_delimiter)
    for ch in delimiter:
        if ch in '@"\\.' or not ch.isprintable() or ch.isspace() or not ch.isascii():
            raise t.error("recipient_delimiter", f"{ch!r} cannot be a recipient delimiter")
    bare = t.string("bare_newline", d.bare_newline)
    bare_newline: BareNewline
    if bare == "reject":
        bare_newline = "reject"
    elif bare == "normalize":
        bare_newline = "normalize"
    else:
        raise t.error("bare_newline", f"must be one of {', '.join(_BARE_NEWLINE)}, got {bare!r}")
    greeting = t.opt_string("greeting")
    if greeting is not None:
        if not greeting.isprintable() or len(greeting) > MAX_GREETING or not greeting.isascii():
            raise t.error("greeting", f"must be one line of printable ASCII, at most {MAX_GREETING} chars")
    processes = t.integer("processes", d.processes, minimum=1, maximum=MAX_SMTP_PROCESSES)
    t.finish()
    return SmtpConfig(recipient_delimiter=delimiter, bare_newline=bare_newline, greeting=greeting,
                      processes=processes)


def _processes(top: Table, section: str) -> int:
    """``[imap] processes`` / ``[pop3] processes`` (the only key of those sections so far)."""
    t = top.table(section)
    processes = t.integer("processes", 1, minimum=1, maximum=MAX_SMTP_PROCESSES)
    t.finish()
    return processes


def parse_config(text: str, source: str, base_dir: Path) -> Config:
    """Parse and validate TOML ``text``; ``source`` names it in errors; paths resolve on ``base_dir``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    top = Table(data, "", source)

    hostname = _domain(top, "hostname", top.required_string("hostname"))
    data_dir_text = top.required_string("data_dir")
    if not data_dir_text.strip():
        raise top.error("data_dir", "must not be empty")
    data_dir = _path(data_dir_text, base_dir)
    domains = _domain_list(top, "domains")
    relay_domains = _domain_list(top, "relay_domains")
    both = sorted(set(domains) & set(relay_domains))
    if both:
        raise top.error("relay_domains", f"{both[0]} is also in domains (a domain is local or relayed)")
    postmaster = top.opt_string("postmaster")
    if postmaster is not None:
        try:
            postmaster = str(parse_address(postmaster.strip()))
        except AddressError as exc:
            raise top.error("postmaster", f"{postmaster!r}: {exc}") from None
    log_file_text = top.opt_string("log_file")
    log_file = _path(log_file_text, base_dir) if log_file_text else None
    log_syslog = top.boolean("log_syslog", False)
    user = _account_name(top, "user")
    group = _account_name(top, "group")
    if group is not None and user is None:
        raise top.error("group", "needs user (the group the server runs as, once it is not root)")

    config = Config(
        hostname=hostname,
        data_dir=data_dir,
        domains=domains,
        relay_domains=relay_domains,
        postmaster=postmaster,
        log_file=log_file,
        log_syslog=log_syslog,
        user=user,
        group=group,
        listen=_listen(top),
        limits=_limits(top),
        auth=_auth(top),
        dns=_dns(top),
        queue=_queue(top),
        delivery=_delivery(top, base_dir),
        smtp=_smtp(top),
        imap=ImapConfig(processes=_processes(top, "imap")),
        pop3=Pop3Config(processes=_processes(top, "pop3")),
        tls=_tls(top, base_dir),
        submission=_submission(top),
        acme=parse_acme(top, base_dir),
        mta_sts=parse_mta_sts(top, hostname),
        inbound=parse_inbound(top),
        reports=parse_reports(top),
        source=source,
    )
    top.finish()
    check_web(config, top)
    return config


def load_config(path: Path) -> Config:
    """Read and validate the file at ``path``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, str(path), path.expanduser().absolute().parent)


def default_config(environ: Mapping[str, str], cwd: Path | None = None) -> Config:
    """The embedded default, with its data in ``$PIGEON_HOME`` if set, else ``./pigeon-data``."""
    base = (cwd or Path.cwd()).absolute()
    config = parse_config(DEFAULT_CONFIG_TOML, EMBEDDED_SOURCE, base)
    home = environ.get("PIGEON_HOME", "")
    if home:
        config = dataclasses.replace(config, data_dir=_path(home, base))
    return config


def find_config(
    cli_value: str | None,
    environ: Mapping[str, str],
    *,
    system_path: Path = SYSTEM_CONFIG_PATH,
) -> Config:
    """The configuration Pigeon runs with (see rule 4 for the search order)."""
    if cli_value:
        return load_config(Path(cli_value))
    env_value = environ.get("PIGEON_CONFIG", "")
    if env_value:
        return load_config(Path(env_value))
    if system_path.is_file():
        return load_config(system_path)
    return default_config(environ)
