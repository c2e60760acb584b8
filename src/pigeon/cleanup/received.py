"""The trace and fix-up header fields cleanup writes: Received:, Message-ID:, Date:.

Rules:
1. Every message gets a ``Received:`` field at the top (RFC 5321 §4.4: a server MUST insert
   trace information when it accepts a message, at the beginning of the message content):
   ``from HELO ([IP])`` (TCP-info is the address literal: Pigeon does no reverse DNS here),
   the TLS parameters when the session was encrypted, ``by HOSTNAME (Pigeon) with PROTOCOL id
   QUEUEID``, ``for <rcpt>`` only when there is exactly one recipient (more would disclose Bcc
   recipients), and ``; DATE`` (RFC 5322 §3.3 date-time).
2. PROTOCOL is an RFC 3848 name (SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA; LMTP likewise) and the
   RFC 6531 §3.7.3 UTF8SMTP/UTF8LMTP forms when the transaction used SMTPUTF8.
3. The client-supplied HELO text is sanitised: ASCII control characters, spaces, parentheses,
   backslashes and semicolons are dropped, every other character outside printable ASCII
   becomes ``?`` (as Postfix prints HELO names), and it is cut to 255 octets
   (RFC 5321 §4.5.3.1.2), so a client cannot forge further trace clauses. The field stays
   ASCII: RFC 5321 §4.1.1.1 and RFC 6531 §3.7.1 allow only an ASCII domain or address literal
   in HELO/EHLO, and U+0085 (NEL) or U+2028 (LINE SEPARATOR) would be a line break to
   Unicode-aware parsers. The HELO is accepted all the same (it is informational, RFC 5321
   §4.1.4); only what is written is changed. The same holds for the TLS words and the userid.
4. Header lines are folded (CRLF + TAB) between clauses; none exceeds 998 octets
   (RFC 5322 §2.1.1) given the limits of rule 3 and of addresses (256, RFC 5321 §4.5.3.1.3).
5. The address literal and the cleaned HELO of a client are computed once per client, not once
   per message (``_CACHED`` of them remembered: both are pure functions of the client's text).

What can go wrong: nothing raises; an unparsable client address is written as given, sanitised.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from pigeon.core.address import Address, format_path
from pigeon.core.envelope import ClientInfo
from pigeon.proto.message.date import rfc5322_date

MAX_HELO = 255  # RFC 5321 §4.5.3.1.2: a domain is at most 255 octets
# Rule 5: the clients' addresses and HELO names seen lately, cleaned once each. A server talks
# to a working set of peers far smaller than this; a flood of new ones only evicts old entries.
_CACHED = 1024
SOFTWARE = "Pigeon"

_UNSAFE = re.compile(r"[\x00-\x20\x7f()\\;]")
_NON_ASCII = re.compile(r"[^\x21-\x7e]")


@functools.lru_cache(maxsize=_CACHED)
def _clean(text: str) -> str:
    """Rule 3: printable ASCII only, at most MAX_HELO octets."""
    return _NON_ASCII.sub("?", _UNSAFE.sub("", text))[:MAX_HELO]


@functools.lru_cache(maxsize=_CACHED)
def address_literal(ip: str) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return f"[{_clean(ip)}]"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return f"[{addr.ipv4_mapped}]"
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def with_protocol(client: ClientInfo, smtputf8: bool) -> str | None:
    """The WITH clause value (rule 2); None for local submission (no network protocol)."""
    proto = client.protocol.upper()
    if proto == "LOCAL":
        return None
    base = "LMTP" if proto.startswith("LMTP") else "SMTP" if proto in ("SMTP", "UTF8SMTP") else "ESMTP"
    tls = client.tls is not None or proto.rstrip("A").endswith("S")
    auth = client.authenticated_as is not None or (proto.endswith("A") and proto != "SMTP")
    if base == "SMTP":  # HELO: no extensions, so neither STARTTLS nor AUTH (RFC 3848 §2)
        return "UTF8SMTP" if smtputf8 else "SMTP"
    suffix = ("S" if tls else "") + ("A" if auth else "")
    if smtputf8:  # RFC 6531 §3.7.3
        return ("UTF8LMTP" if base == "LMTP" else "UTF8SMTP") + suffix
    return base + suffix


def _tls_clause(tls: str) -> str:
    parts = _clean_words(tls)
    if len(parts) >= 2:
        return f"(using {parts[0]} with cipher {' '.join(parts[1:])})"
    return f"(using {parts[0]})" if parts else ""


def _clean_words(text: str) -> list[str]:
    return [w for w in (_clean(p) for p in text.split()) if w]


def received_header(
    client: ClientInfo,
    hostname: str,
    qid: str,
    recipients: list[Address],
    now: float,
    smtputf8: bool = False,
) -> bytes:
    """The whole ``Received:`` field, folded, ending in CRLF (rules 1-4)."""
    lines: list[str] = []
    if client.address.lower() != "local":
        literal = address_literal(client.address)
        helo = _clean(client.helo)
        lines.append(f"from {helo} ({literal})" if helo else f"from {literal}")
        if client.tls:
            tls = _tls_clause(client.tls)
            if tls:
                lines.append(tls)
        by = f"by {hostname} ({SOFTWARE})"
    else:
        who = _clean(client.authenticated_as or "")
        by = f"by {hostname} ({SOFTWARE}, from userid {who})" if who else f"by {hostname} ({SOFTWARE})"
    proto = with_protocol(client, smtputf8)
    lines.append(f"{by} with {proto} id {qid}" if proto else f"{by} id {qid}")
    date = rfc5322_date(now)
    if len(recipients) == 1:
        lines.append(f"for {format_path(recipients[0])}; {date}")
    else:
        lines[-1] += ";"
        lines.append(date)
    return ("Received: " + "\r\n\t".join(lines) + "\r\n").encode("utf-8")


def message_id(qid: str, hostname: str) -> str:
    """A Message-ID for a message that came without one (RFC 5322 §3.6.4): unique because the
    queue id is unique on this host and the host name is ours."""
    return f"<{qid}@{hostname}>"


def missing_headers(seen: set[str], qid: str, hostname: str, now: float) -> bytes:
    """The ``Date:`` and ``Message-ID:`` fields a submitted message lacks (RFC 6409 §8.2, §8.3)."""
    out = ""
    if "date" not in seen:
        out += f"Date: {rfc5322_date(now)}\r\n"
    if "message-id" not in seen:
        out += f"Message-ID: {message_id(qid, hostname)}\r\n"
    return out.encode("utf-8")
