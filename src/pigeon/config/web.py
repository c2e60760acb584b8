"""The web endpoint's settings: ``[acme]`` and ``[mta_sts]`` (``[listen] http/https/metrics``
are read with the other listeners).

Rules:
1. ``[acme]`` present (even empty) turns ACME on; absent, no certificate is ever requested.
   ``directory`` must be an https URL (RFC 8555 §6.1: ACME runs over HTTPS only).
2. ACME needs a way to be validated: ``challenge = "http-01"`` needs ``[listen] http`` (the CA
   fetches ``http://<name>/.well-known/acme-challenge/``, on port 80: RFC 8555 §8.3);
   ``"tls-alpn-01"`` (RFC 8737 §3: the CA connects to port 443) needs ``[listen] https``.
4. ``[reports]``: ``send`` (default true) lets the server send the due reports once a day;
   ``interval`` (hidden, for tests) replaces the daily time by a period in seconds.
3. ``[mta_sts] mode`` is one of RFC 8461 §3.2's three; ``max_age`` at most 31557600 s (the
   same section); ``mx`` patterns are host names, optionally with a leading ``*.`` (§4.1).

What can go wrong: each bad value is a ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

from pathlib import Path

from pigeon.config.model import AcmeChallenge, AcmeConfig, Config, MtaStsConfig, MtaStsMode, ReportsConfig
from pigeon.config.reader import Table
from pigeon.core.address import AddressError, is_valid_domain, parse_address

# RFC 8461 §3.2: "max_age: Max lifetime of the policy (plaintext non-negative integer seconds,
# maximum value of 31557600)".
MAX_MTA_STS_AGE = 31557600
_CHALLENGES: dict[str, AcmeChallenge] = {"http-01": "http-01", "tls-alpn-01": "tls-alpn-01"}
_MODES: dict[str, MtaStsMode] = {"enforce": "enforce", "testing": "testing", "none": "none"}


def parse_acme(top: Table, base_dir: Path) -> AcmeConfig | None:
    if not top.has("acme"):
        return None
    t = top.table("acme")
    d = AcmeConfig()
    directory = t.string("directory", d.directory).strip()
    if not directory.startswith("https://"):
        raise t.error("directory", f"must be an https:// URL (RFC 8555 §6.1), got {directory!r}")
    email = t.opt_string("email")
    if email is not None:
        try:
            email = str(parse_address(email.strip()))
        except AddressError as exc:
            raise t.error("email", f"{email!r}: {exc}") from None
    ca_file = t.opt_string("ca_file")
    challenge = t.string("challenge", d.challenge)
    if challenge not in _CHALLENGES:
        raise t.error("challenge", f"must be http-01 or tls-alpn-01, got {challenge!r}")
    t.finish()
    path = Path(ca_file).expanduser() if ca_file else None
    if path is not None and not path.is_absolute():
        path = (base_dir / path).absolute()
    return AcmeConfig(directory=directory, email=email, ca_file=path, challenge=_CHALLENGES[challenge])


def parse_mta_sts(top: Table, hostname: str) -> MtaStsConfig:
    t = top.table("mta_sts")
    d = MtaStsConfig()
    mode = t.string("mode", d.mode)
    if mode not in _MODES:
        raise t.error("mode", f"must be enforce, testing or none, got {mode!r}")
    max_age = t.integer("max_age", d.max_age, minimum=0, maximum=MAX_MTA_STS_AGE)
    mx: list[str] = []
    for pattern in t.string_list("mx"):
        name = pattern.strip().lower().rstrip(".")
        bare = name[2:] if name.startswith("*.") else name
        if not is_valid_domain(bare):
            raise t.error("mx", f"{pattern!r} is not a host name or *.domain pattern (RFC 8461 §4.1)")
        mx.append(name)
    t.finish()
    return MtaStsConfig(mode=_MODES[mode], max_age=max_age, mx=tuple(mx) or (hostname,))


def parse_reports(top: Table) -> ReportsConfig:
    """Rule 4."""
    t = top.table("reports")
    send = t.boolean("send", True)
    interval = t.duration("interval", 0.0, minimum=0.0) if t.has("interval") else None
    t.finish()
    return ReportsConfig(send=send, interval=interval or None)


def check_web(config: Config, top: Table) -> None:
    """Rule 2: an ACME challenge needs its listener."""
    acme = config.acme
    if acme is None:
        return
    if acme.challenge == "http-01" and not config.listen.http:
        raise top.error("acme", 'challenge "http-01" needs [listen] http (port 80)')
    if acme.challenge == "tls-alpn-01" and not config.listen.https:
        raise top.error("acme", 'challenge "tls-alpn-01" needs [listen] https (port 443, RFC 8737 §3)')
