"""Mail addresses as values.

Rules:
1. An ``Address`` is a local part and a domain. The domain is kept lower-cased (domains are
   case-insensitive, RFC 5321 §2.4); the local part keeps its case (it is the destination's to
   interpret), but Pigeon's own lookups fold it (``key``).
2. The null reverse path ``<>`` is not an Address: it is ``None`` where a sender is expected.
3. ``parse_address`` accepts the RFC 5321 §4.1.2 Mailbox syntax (dot-string or quoted-string
   local part; domain or address literal) and, with ``utf8=True``, RFC 6531 UTF-8 local parts
   and domains. Anything else raises ``AddressError``.
4. Limits from RFC 5321 §4.5.3.1: local part 64 octets, domain 255 octets, path 256 octets.

What can go wrong: malformed input raises ``AddressError`` (never a crash); callers turn it into
``501 5.1.3``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3


class AddressError(ValueError):
    """The text is not a valid mailbox."""


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ATEXT_UTF8 = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_DOT_STRING = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*$")
_DOT_STRING_UTF8 = re.compile(rf"^{_ATEXT_UTF8}+(?:\.{_ATEXT_UTF8}+)*$")
_QUOTED = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$')
_QUOTED_UTF8 = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"$')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_LABEL_UTF8 = r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f]){0,61}(?:[A-Za-z0-9]|[^\x00-\x7f]))?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_DOMAIN_UTF8 = re.compile(rf"^{_LABEL_UTF8}(?:\.{_LABEL_UTF8})*$")
_IPV4 = re.compile(r"^\[(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\]$")
_IPV6 = re.compile(r"^\[IPv6:([0-9A-Fa-f:.]+)\]$")


def is_valid_domain(domain: str, utf8: bool = False) -> bool:
    if not domain or len(domain.encode("utf-8")) > MAX_DOMAIN:
        return False
    if domain.startswith("["):
        m = _IPV4.match(domain)
        if m:
            return all(0 <= int(g) <= 255 for g in m.groups())
        m6 = _IPV6.match(domain)
        if m6:
            import ipaddress

            try:
                ipaddress.IPv6Address(m6.group(1))
            except ValueError:
                return False
            return True
        return False
    return bool((_DOMAIN_UTF8 if utf8 else _DOMAIN).match(domain))


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        """The folded form Pigeon uses for lookups: ``local@domain`` lower-cased."""
        return f"{self.local}@{self.domain}".lower()

    @property
    def is_utf8(self) -> bool:
        return not str(self).isascii()

    @property
    def unquoted_local(self) -> str:
        """The local part with RFC 5321 quoting removed (``"a b"`` → ``a b``)."""
        if self.local.startswith('"') and self.local.endswith('"') and len(self.local) >= 2:
            return re.sub(r"\\(.)", r"\1", self.local[1:-1])
        return self.local


def parse_address(text: str, utf8: bool = False) -> Address:
    """Parse ``local@domain`` (no angle brackets). Raises AddressError."""
    if len(text.encode("utf-8")) > MAX_PATH:
        raise AddressError("address too long")
    at = text.rfind("@")
    if at <= 0 or at == len(text) - 1:
        raise AddressError("address must be local@domain")
    local, domain = text[:at], text[at + 1 :]
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    if local.startswith('"'):
        if not (_QUOTED_UTF8 if utf8 else _QUOTED).match(local):
            raise AddressError("bad quoted local part")
    elif not (_DOT_STRING_UTF8 if utf8 else _DOT_STRING).match(local):
        raise AddressError("bad local part")
    if not is_valid_domain(domain, utf8):
        raise AddressError("bad domain")
    if not domain.startswith("["):
        domain = domain.lower().rstrip(".")
    return Address(local, domain)


def format_path(address: Address | None) -> str:
    """``<local@domain>`` or ``<>`` for the null path."""
    return "<>" if address is None else f"<{address}>"
