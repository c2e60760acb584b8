"""What the relay does to a message on its way out: the envelope sender (SRS) and the signatures
(DKIM, ARC). ``relay`` asks ``plan`` per recipient, groups recipients by destination *and*
plan, and ``relay_session`` calls ``sign`` on the exact form it sends (after any 8-bit → 7-bit
conversion), so every signature verifies at the receiver.

Rules:
1. A recipient is *forwarded* when cleanup's expansion led from a local address (its
   ``original``) to an address in another domain: an alias or a user's forward. Its
   forwarding domain is the original's domain.
2. SRS (``mailauth.srs``): the envelope sender of a forwarded recipient is rewritten into the
   forwarding domain, unless it is ``<>`` or in a local domain (issue 17; postsrsd does the
   same). The queue keeps the real sender, so our own DSNs still go straight to it.
3. DKIM: a message is *ours* when it came from an authenticated client (submission) or from this
   machine (``pigeon sendmail``, DSNs and reports: client ``local``). Ours is signed with the
   keys of the ``From:`` domain when that is local, else of the envelope sender's domain when
   local, else of the local domain the hostname is in (DSNs from ``MAILER-DAEMON@host``).
   Other mail is signed only when its ``From:`` domain is local and it came from a loopback
   client (a program on this host, OpenDKIM's default ``InternalHosts``), and never when it is
   merely relayed for ``relay_domains``: a stranger's mail is never signed as ours.
4. ARC (RFC 8617): a forwarded recipient's copy is sealed with the forwarding domain's RSA key,
   the AAR carrying our ``Authentication-Results`` (authserv-id = the hostname) when present.
5. A domain without keys, or keys that cannot be read, means no signature and a log line: the
   message goes out anyway (a missing signature is not worth holding mail).

What can go wrong: see rule 5. ``sign`` never raises for message content (``mailauth.dkimsign``
rule 4); an ``OSError`` reading keys is logged and the message sent unsigned.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.core.envelope import Envelope
from pigeon.directory.resolve import fold
from pigeon.mailauth.dkimsign import arc_headers, dkim_headers
from pigeon.mailauth.keys import DkimKey, KeyStore
from pigeon.mailauth.srs import Srs

log = logging.getLogger(__name__)

DkimMode = Literal["ours", "from-local"]
_FROM = re.compile(rb"^from[ \t]*:(.*(?:\r\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one recipient's copy leaves (hashable: recipients with equal plans share a transaction)."""

    sender: Address | None
    dkim: DkimMode | None = None
    arc_domain: str | None = None  # rule 4
    envelope_domain: str | None = None  # the original sender's domain (rule 3's fallback)


NO_PLAN = Plan(None)


def from_domain(message: bytes) -> str | None:
    """The domain of the first address of the ``From:`` field, lower-cased."""
    head = message.split(b"\r\n\r\n", 1)[0]
    m = _FROM.search(head)
    if m is None:
        return None
    value = m.group(1).decode("utf-8", "replace").replace("\r\n", "")
    addresses = email.utils.getaddresses([value])
    for _, addr in addresses:
        if "@" in addr:
            return addr.rpartition("@")[2].strip().lower().rstrip(".") or None
    return None


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class Outbound:
    def __init__(self, keys: KeyStore, srs: Srs | None, is_local: Callable[[str], bool],
                 relay_domains: Callable[[], tuple[str, ...]], hostname: str, clock: Clock) -> None:
        self.keys = keys
        self.srs = srs
        self.is_local = is_local
        self.relay_domains = relay_domains
        self.hostname = hostname
        self.clock = clock

    def plan(self, env: Envelope | None, sender: Address | None, original: Address | None,
             final: Address) -> Plan:
        """Rules 1-4 for one recipient (``original``: where expansion started; None: unknown)."""
        forwarded = (original is not None and fold(original) != fold(final)
                     and self.is_local(original.domain) and not self.is_local(final.domain))
        out_sender = sender
        arc = None
        if forwarded and original is not None:
            arc = original.domain.lower()
            if sender is not None and not self.is_local(sender.domain) and self.srs is not None:
                out_sender = self.srs.forward(sender, arc, self.clock.now())  # rule 2
        mode: DkimMode | None = None
        if env is not None:
            client = env.client
            if client.address == "local" or client.authenticated_as is not None:
                mode = "ours"
            elif _loopback(client.address) and final.domain.lower() not in self.relay_domains():
                mode = "from-local"
        env_domain = sender.domain.lower() if sender is not None else None
        return Plan(out_sender, mode, arc, env_domain)

    def _dkim_domain(self, message: bytes, plan: Plan) -> str | None:
        frm = from_domain(message)
        if frm is not None and self.is_local(frm):
            return frm
        if plan.dkim != "ours":
            return None  # rule 3: only our own mail falls back to other domains
        if plan.envelope_domain is not None and self.is_local(plan.envelope_domain):
            return plan.envelope_domain
        host = self.hostname.lower()
        while "." in host:
            if self.is_local(host):
                return host
            host = host.split(".", 1)[1]
        return None

    def _keys(self, domain: str) -> list[DkimKey]:
        try:
            return self.keys.signing_keys(domain)
        except (OSError, ValueError) as exc:  # rule 5
            log.error("dkim: keys of %s unreadable: %s; sending unsigned", domain, exc)
            return []

    def sign(self, message: bytes, plan: Plan) -> bytes:
        """The header fields to prepend to ``message`` (the form that is sent)."""
        out = b""
        if plan.dkim is not None:
            domain = self._dkim_domain(message, plan)
            if domain is not None:
                keys = self._keys(domain)
                if keys:
                    out = dkim_headers(message, keys)
                else:
                    log.warning("dkim: %s has no signing key; sending unsigned", domain)
        if plan.arc_domain is not None:
            rsa = [k for k in self._keys(plan.arc_domain) if k.algorithm == "rsa"]
            if rsa:
                out = arc_headers(out + message, rsa[0], self.hostname) + out
            else:
                log.warning("arc: %s has no RSA key; forwarding without a seal", plan.arc_domain)
        return out

    def signer(self, plan: Plan) -> Callable[[bytes], bytes] | None:
        if plan.dkim is None and plan.arc_domain is None:
            return None
        return lambda message: self.sign(message, plan)
