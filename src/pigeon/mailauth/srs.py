"""The Sender Rewriting Scheme, as libsrs2 and postsrsd write it (the "guarded" scheme).

A message that an alias or a forward sends on to another domain leaves with the envelope sender
rewritten into the forwarding domain, so that the receiver's SPF check (RFC 7208) looks at our
servers, and a bounce comes back to us, who decode it and pass it to the original sender.

Forms (``=`` is the separator we write; ``+`` and ``-`` are accepted after ``SRS0``/``SRS1``):
- ``SRS0=HHHH=TT=origin.example=user@forwarder`` for ``user@origin.example``;
- ``SRS1=HHHH=first.fwd==HHHH=TT=origin.example=user@second.fwd`` for an address already in
  SRS0 form at ``first.fwd`` (forwarded twice); an SRS1 address forwarded again keeps its
  opaque part and gets a new hash.

Rules:
1. ``HHHH`` is the first 4 characters (libsrs2 ``hashlength`` 4) of the base64 HMAC-SHA1, keyed
   with the secret, over the lower-cased fields: ``TT``, origin domain and user for SRS0; first
   forwarder and the rest for SRS1. Hashes compare case-insensitively (mail systems fold case).
2. ``TT`` is the day number (seconds / 86400) modulo 1024 in two base32 characters; an address
   older than ``MAX_AGE_DAYS`` (21, postsrsd's default) or from the future is refused.
3. ``forward`` rewrites a sender unless it is ``<>`` or in a local domain (the caller says):
   those are returned as they are.
4. ``reverse`` returns the address a bounce to an SRS address goes to: the original sender
   (SRS0), or the first forwarder's SRS0 address (SRS1). Whatever does not verify — bad hash,
   expired, malformed — raises ``SrsError`` with a reason for the log; the SMTP server answers
   ``550 5.7.1`` (never a crash, never a delivery).
5. The secret is at least 16 octets; ``load_secret`` makes a 32-octet one (mode 0600) in the
   data directory the first time.

What can go wrong: ``SrsError`` (rule 4); ``OSError`` from ``load_secret``. A rewritten local
part longer than 64 octets (RFC 5321 §4.5.3.1.1) is still produced, as postsrsd does; most
servers accept longer ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from pathlib import Path

from pigeon.core.address import Address, AddressError, parse_address
from pigeon.durable.io import write_file_synced

MAX_AGE_DAYS = 21  # postsrsd SRS_MAXAGE default
HASH_LENGTH = 4  # libsrs2 / postsrsd default hashlength
TIME_PRECISION = 86400  # one day, libsrs2 SRS_TIME_PRECISION
TIME_SLOTS = 1024  # two base32 characters: 32 * 32
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_SRS = re.compile(r"^srs[01][=+-]", re.IGNORECASE)
SECRET_BYTES = 32


class SrsError(ValueError):
    """An SRS address that does not verify (rule 4)."""


def is_srs(local: str) -> bool:
    return bool(_SRS.match(local))


def load_secret(path: Path) -> bytes:
    """Rule 5: the secret at ``path``, made on first use."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        data = secrets.token_hex(SECRET_BYTES).encode("ascii")
        write_file_synced(path, data + b"\n")  # durable before any address is signed with it
    if len(data) < 16:
        raise ValueError(f"{path}: SRS secret shorter than 16 octets")
    return data


class Srs:
    def __init__(self, secret: bytes, max_age_days: int = MAX_AGE_DAYS) -> None:
        if len(secret) < 16:
            raise ValueError("SRS secret shorter than 16 octets")
        self.secret = secret
        self.max_age_days = max_age_days

    def _hash(self, *fields: str) -> str:
        mac = hmac.new(self.secret, digestmod=hashlib.sha1)
        for f in fields:
            mac.update(f.lower().encode("utf-8"))
        return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]

    def _check_hash(self, given: str, *fields: str) -> None:
        if not hmac.compare_digest(given.lower(), self._hash(*fields).lower()):
            raise SrsError("hash does not match")

    @staticmethod
    def timestamp(now: float) -> str:
        day = int(now // TIME_PRECISION) % TIME_SLOTS
        return _BASE32[day >> 5] + _BASE32[day & 31]

    def _check_time(self, tt: str, now: float) -> None:
        if len(tt) != 2 or any(c not in _BASE32 for c in tt.upper()):
            raise SrsError(f"bad timestamp {tt!r}")
        then = (_BASE32.index(tt[0].upper()) << 5) | _BASE32.index(tt[1].upper())
        today = int(now // TIME_PRECISION) % TIME_SLOTS
        age = (today - then) % TIME_SLOTS
        if age > self.max_age_days:
            raise SrsError(f"expired ({age} days old; at most {self.max_age_days})")

    def forward(self, sender: Address, domain: str, now: float) -> Address:
        """Rule 3 for a sender the caller found remote: the address in ``domain``."""
        local = sender.local
        if is_srs(local) and local[:4].upper() == "SRS1":
            parts = local[5:].split("=", 2)
            if len(parts) == 3:  # SRS1=HHHH=first==rest: keep the opaque part, new hash
                _, first, rest = parts
                return Address(f"SRS1={self._hash(first, rest)}={first}={rest}", domain)
        if is_srs(local) and local[:4].upper() == "SRS0":
            rest = local[4:]  # "=HHHH=TT=origin=user", separator kept (libsrs2)
            first = sender.domain
            return Address(f"SRS1={self._hash(first, rest)}={first}={rest}", domain)
        tt = self.timestamp(now)
        h = self._hash(tt, sender.domain, local)
        return Address(f"SRS0={h}={tt}={sender.domain}={local}", domain)

    def reverse(self, address: Address, now: float) -> Address:
        """Rule 4: where a bounce to ``address`` goes."""
        local = address.local
        if not is_srs(local):
            raise SrsError("not an SRS address")
        kind, body = local[:4].upper(), local[5:]
        if kind == "SRS0":
            parts = body.split("=", 3)
            if len(parts) != 4 or not all(parts):
                raise SrsError("malformed SRS0 address")
            h, tt, origin, user = parts
            self._check_hash(h, tt, origin, user)
            self._check_time(tt, now)
            try:
                return parse_address(f"{user}@{origin}", utf8=True)
            except AddressError as exc:
                raise SrsError(f"bad original address: {exc}") from None
        parts = body.split("=", 2)
        if len(parts) != 3 or not parts[0] or not parts[1] or len(parts[2]) < 2:
            raise SrsError("malformed SRS1 address")
        h, first, rest = parts
        self._check_hash(h, first, rest)
        try:
            return parse_address(f"SRS0{rest}@{first}", utf8=True)
        except AddressError as exc:
            raise SrsError(f"bad first forwarder address: {exc}") from None
