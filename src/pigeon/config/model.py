"""The configuration as frozen values: what ``parse_config`` builds and the rest of Pigeon reads.

Rules:
1. Every value here has already been validated by the loader; code that holds a ``Config`` never
   re-checks it. Defaults live on the dataclasses, so a section left out of the file, or a key
   left out of a section, gets exactly the default documented here and in the README.
2. Everything is immutable (frozen dataclasses, tuples): one ``Config`` can be shared by every
   task and thread without copying.
3. ``Endpoint`` keeps IPv6 hosts without brackets; ``str(endpoint)`` puts them back
   (``[::1]:2525``), so ``Endpoint.parse(str(e)) == e``.

What can go wrong: ``Endpoint.parse`` raises ``ValueError`` with a short reason on bad input; the
loader wraps that into a ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pigeon.auth.throttle import ThrottleSettings
from pigeon.config.inbound import InboundConfig
from pigeon.core.address import is_valid_domain

BareNewline = Literal["reject", "normalize"]

MIN_PORT = 1  # TCP port numbers are 16 bits and 0 is not a real port (RFC 793 §3.1)
MAX_PORT = 65535


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host (name, IPv4 or IPv6 address) and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.host)

    @classmethod
    def parse(cls, text: str, default_port: int | None = None, ip_only: bool = False) -> Endpoint:
        """Parse ``host:port``, ``[v6]:port``, or (with ``default_port``) ``host`` / ``[v6]``.

        Raises ValueError naming the problem. IPv6 addresses must be in brackets, since a bare
        ``::1:25`` cannot be told apart from the address ``::1:25``.
        """
        text = text.strip()
        if not text:
            raise ValueError("empty address")
        port_text: str | None
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise ValueError(f"{text!r}: missing ']'")
            host = text[1:close]
            rest = text[close + 1 :]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
            if rest == "":
                port_text = None
            elif rest.startswith(":"):
                port_text = rest[1:]
            else:
                raise ValueError(f"{text!r}: expected ':port' after ']'")
        else:
            if text.count(":") > 1:
                raise ValueError(f"{text!r}: IPv6 addresses must be written in brackets, e.g. [::1]:25")
            host, sep, after = text.partition(":")
            port_text = after if sep else None
            if not _is_ip(host):
                if ip_only:
                    raise ValueError(f"{text!r}: {host!r} is not an IP address")
                if not is_valid_domain(host) or host.startswith("["):
                    raise ValueError(f"{text!r}: {host!r} is not a valid host name or address")
                host = host.lower().rstrip(".")
        if port_text is None:
            if default_port is None:
                raise ValueError(f"{text!r}: a port is required (host:port)")
            port = default_port
        else:
            if not port_text.isdigit():
                raise ValueError(f"{text!r}: port {port_text!r} is not a number")
            port = int(port_text)
        if not MIN_PORT <= port <= MAX_PORT:
            raise ValueError(f"{text!r}: port {port} is outside {MIN_PORT}..{MAX_PORT}")
        return cls(host, port)


@dataclass(frozen=True, slots=True)
class Listen:
    """Where each service listens. An empty tuple means the service is not started."""

    smtp: tuple[Endpoint, ...] = ()
    submission: tuple[Endpoint, ...] = ()
    submissions: tuple[Endpoint, ...] = ()
    imap: tuple[Endpoint, ...] = ()
    imaps: tuple[Endpoint, ...] = ()
    pop3: tuple[Endpoint, ...] = ()
    pop3s: tuple[Endpoint, ...] = ()
    # The web endpoint (pigeon.web): ACME http-01, MTA-STS policy, client autoconfiguration on
    # http/https (documented for ports 80/443); /metrics and /healthz on metrics.
    http: tuple[Endpoint, ...] = ()
    https: tuple[Endpoint, ...] = ()
    metrics: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    # 50 MiB: larger than any mainstream provider accepts (Gmail 25 MB, Outlook 35 MB of
    # encoded text), so mail from the field is not refused here first.
    max_message_size: int = 50 * 1024 * 1024
    # RFC 5321 §4.5.3.1.8: a server MUST accept at least 100 recipients; 1000 leaves room.
    max_recipients: int = 1000
    # Over every service of one process together (each SMTP worker process counts its own).
    # Each connection costs about FDS_PER_CONNECTION open files (pigeon.net.fdlimit): the server
    # raises its open-file limit to the hard limit at start and refuses to start if this does
    # not fit in it.
    max_connections: int = 1000
    # One address should not take the whole server; 50 is generous for a busy sending MTA.
    max_connections_per_ip: int = 50
    # RFC 5321 §4.5.3.2.7: a server SHOULD wait at least 5 minutes for the next command.
    session_timeout: float = 300.0
    # A command or data line must arrive whole within this long of its first octet, however
    # often octets trickle in (Postfix's smtpd_per_record_deadline): 60 s lets a 64 KiB line
    # through a 1 KiB/s link.
    line_timeout: float = 60.0
    # Postfix's smtpd_hard_error_limit default is 20: after that many errors, hang up.
    max_errors: int = 20
    # RFC 5321 §6.3 loop detection: more than 100 Received: headers means a loop (Postfix's
    # hopcount_limit is 50; RFC 5321 suggests a large value, e.g. 100).
    max_received_headers: int = 100
    # Hard limit on a DATA text line, CRLF included. RFC 5321 §4.5.3.1.6 says 1000 octets, but
    # real mail breaks it; this relaxes it to 64 KiB and refuses beyond, bounding the buffer.
    max_line_length: int = 65536


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # RFC 8314 / RFC 4954 §4: never offer AUTH PLAIN/LOGIN over a cleartext channel, except,
    # when this is set, on a loopback address (development and local test clients).
    allow_plaintext_on_loopback: bool = False
    # AUTH on the port 25 service: off by default (MX hosts do not take logins; an AUTH there
    # only invites password guessing). Submission always offers it.
    smtp_auth: bool = False
    # Brute-force protection (pigeon.auth.throttle documents each number).
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    # The verified-credential cache (pigeon.auth.credcache, docs/security.md): seconds a
    # verified login skips argon2 (0 = off), and how many accounts it remembers.
    credential_cache_ttl: float = 600.0
    credential_cache_size: int = 10_000


@dataclass(frozen=True, slots=True)
class TlsConfig:
    # PEM certificate chain and private key; both absent: a self-signed certificate for
    # `hostname` is generated into data_dir/tls/ at first start (development default).
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    # Per authenticated user (pigeon.submission.ratelimit); 0 = unlimited.
    messages_per_hour: int = 200
    recipients_per_message: int = 100


@dataclass(frozen=True, slots=True)
class DnsConfig:
    nameservers: tuple[Endpoint, ...] = ()  # empty: the system resolver (/etc/resolv.conf)
    public_ips: tuple[str, ...] = ()  # the addresses mail leaves from (`pigeon dns`: SPF, A/AAAA)
    # DANE (RFC 7672): trust the AD bit of the resolvers, as Postfix's smtp_dns_support_level =
    # dnssec does. Only safe when every nameserver is a validating resolver on this host (or
    # reached over a path nobody can tamper with): the AD bit itself is not signed.
    dnssec: bool = False


QueueFlush = Literal["filesystem", "file"]


@dataclass(frozen=True, slots=True)
class QueueConfig:
    # Seconds between attempts; the last value repeats until max_lifetime.
    retry_schedule: tuple[float, ...] = (300.0, 600.0, 1200.0, 2400.0, 3600.0)
    # RFC 5321 §4.5.4.1: give up after at least 4-5 days.
    max_lifetime: float = 5 * 24 * 3600.0
    # RFC 5321 §4.5.4.1 suggests telling the sender about a delay; Postfix warns after 4 hours.
    delay_warning: float = 4 * 3600.0
    # Fraction of random spread added to each retry, so deferred mail does not retry in lockstep.
    jitter: float = 0.1
    # Send the postmaster a copy of each failure notice (Postfix notify_classes = bounce).
    notify_postmaster: bool = False
    # How the fast lane's Maildir files are flushed (durable.flushes; the journal always
    # commits with an fdatasync of its segment):
    # "filesystem" = one syncfs per batch where it reports errors (Linux >= 5.8), else per file;
    # "file" = an fsync of every file and directory.
    flush: QueueFlush = "filesystem"


TlsLevel = Literal["may", "encrypt", "verify"]


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    remote_port: int = 25  # RFC 5321 §4.5.4.2 / IANA: SMTP relay uses port 25
    smarthost: str | None = None  # "host" or "host:port" (validated; Endpoint.parse(s, 25))
    smarthost_user: str | None = None  # AUTH to the smarthost (with smarthost_password_file)
    smarthost_password_file: Path | None = None  # first line = the password; keep it 0600
    # Relaying through a provider sends credentials and all mail to one host: TLS is required
    # and its certificate verified against the system's CAs, unless the operator says otherwise.
    smarthost_tls: Literal["required", "opportunistic"] = "required"
    smarthost_tls_verify: bool = True
    # Per-domain TLS for MX delivery (Postfix smtp_tls_policy_maps levels): "may" (opportunistic,
    # the default for every domain), "encrypt" (TLS required, any certificate), "verify" (TLS
    # required, the certificate must verify and name the MX host).
    tls_policy: tuple[tuple[str, TlsLevel], ...] = ()
    # Extra trust anchors (PEM) for verified TLS (smarthost, "verify" policy); default: the system's.
    tls_ca_file: Path | None = None
    # MTA-STS (RFC 8461): look up and apply the receiving domain's policy.
    mta_sts: bool = True
    # The policy host's HTTPS port. 443 is the RFC's (§3.3); another value is for tests only.
    mta_sts_port: int = 443


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    recipient_delimiter: str = "+"  # each character is a delimiter; "" disables sub-addressing
    # RFC 5321 §2.3.8: a bare LF or CR in DATA is not a line ending; "reject" refuses the message
    # (554 5.6.0), "normalize" converts it to CRLF.
    bare_newline: BareNewline = "reject"
    greeting: str | None = None  # the text after "220 <hostname> " (default: "Pigeon ESMTP ready")
    # Processes accepting on the port-25 listeners (one shared accept queue): the server plus processes - 1
    # SMTP worker processes (app.worker, started by app.master). One Python process uses about one core; 1 keeps
    # everything in one process.
    processes: int = 1


# Let's Encrypt's production directory (https://letsencrypt.org/docs/acme-protocol-updates/).
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
AcmeChallenge = Literal["http-01", "tls-alpn-01"]
MtaStsMode = Literal["enforce", "testing", "none"]


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """``[acme]``: certificates from an ACME server (RFC 8555) for hostname, mta-sts.<domain>
    and autoconfig.<domain>; ``[tls] cert/key`` take precedence when set."""

    directory: str = LETS_ENCRYPT_DIRECTORY
    email: str | None = None
    ca_file: Path | None = None  # trust anchors for the ACME server (tests: Pebble's)
    challenge: AcmeChallenge = "http-01"


@dataclass(frozen=True, slots=True)
class MtaStsConfig:
    """``[mta_sts]``: the policy served at https://mta-sts.<domain>/.well-known/mta-sts.txt."""

    # RFC 8461 §3.2: "testing" first is the RFC's advice for a new deployment (reports, no refusals).
    mode: MtaStsMode = "testing"
    # RFC 8461 §3.2: max_age up to 31557600 s; a week is the common choice (Google, mox).
    max_age: int = 604800
    mx: tuple[str, ...] = ()  # empty: the hostname


@dataclass(frozen=True, slots=True)
class ReportsConfig:
    """``[reports]``: the aggregate reports (TLS-RPT, DMARC) the running server sends by itself
    once a day (pigeon.reports). ``interval`` is for tests: every that many seconds instead of
    the daily time (documented in docs/tls-policy.md, not in the sample configuration)."""

    send: bool = True
    interval: float | None = None


@dataclass(frozen=True, slots=True)
class ImapConfig:
    # Processes serving the IMAP and IMAPS listeners (one shared accept queue), as [smtp] processes: the
    # server plus processes - 1 IMAP worker processes (app.worker). Sessions of one account in
    # different processes see each other's changes (docs/architecture.md "Change notices between
    # processes"). 1 keeps IMAP in the server process.
    processes: int = 1


@dataclass(frozen=True, slots=True)
class Pop3Config:
    # Processes serving the POP3 and POP3S listeners, as [imap] processes; the maildrop lock is a
    # file lock, so one session per maildrop holds across them (RFC 1939 §8).
    processes: int = 1


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str
    data_dir: Path
    domains: tuple[str, ...] = ()
    relay_domains: tuple[str, ...] = ()
    postmaster: str | None = None
    log_file: Path | None = None
    # The operator's log to syslog too (facility mail, as Postfix and Dovecot log), via /dev/log.
    log_syslog: bool = False
    # Started as root, `pigeon serve` binds every listener, then becomes this user (and group:
    # default, the user's own) before it serves anything (pigeon.app.privileges).
    user: str | None = None
    group: str | None = None
    listen: Listen = field(default_factory=Listen)
    limits: Limits = field(default_factory=Limits)
    auth: AuthConfig = field(default_factory=AuthConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    tls: TlsConfig = field(default_factory=TlsConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    acme: AcmeConfig | None = None  # None: no [acme] section, no ACME certificates
    mta_sts: MtaStsConfig = field(default_factory=MtaStsConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)  # [inbound]: config.inbound
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    source: str = "<embedded default>"

    @property
    def directory_path(self) -> Path:
        """Where the user directory lives (the team's data layout)."""
        return self.data_dir / "directory.sqlite3"
