"""Password hashes brought over from Dovecot: ``{SCHEME}data`` as in a Dovecot passwd-file.

Rules:
1. Accepted schemes, by Dovecot's names (doc.dovecot.org, "Password Schemes"), case-insensitive:
   ``ARGON2ID`` and ``ARGON2I`` (PHC strings, verified by argon2-cffi), ``SHA512-CRYPT`` and
   ``SHA256-CRYPT`` (``$6$``/``$5$`` crypt(3) strings, passlib), ``BLF-CRYPT`` (``$2y$``/``$2b$``/
   ``$2a$``, bcrypt), ``SSHA512``, ``SSHA256`` and ``SSHA`` (base64 of digest + salt; a ``.HEX``
   suffix on the scheme name means hex instead).
2. Every other scheme is refused when it is imported (``ForeignHashError``): ``PLAIN`` and
   ``CLEARTEXT`` would put a readable password in the directory, and ``CRYPT`` (DES), ``MD5``,
   ``PLAIN-MD5``, ``SHA`` and friends are too weak to keep; their users need a new password.
3. A foreign hash always needs a rehash: after the next successful login the directory replaces
   it with an argon2id hash of today's parameters (``passwords.needs_rehash``).
4. Verification answers only True or False and never raises; digests are compared in constant
   time (``hmac.compare_digest``). bcrypt looks at only the first 72 octets of a password
   (Dovecot's BLF-CRYPT too); a longer password is cut there, as it was when it was hashed.

What can go wrong: a malformed stored value verifies as False and is logged without the password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from passlib.hash import sha256_crypt, sha512_crypt

log = logging.getLogger(__name__)

BCRYPT_MAX = 72  # octets of the password bcrypt reads (Rule 4)

_SALTED = {"SSHA512": ("sha512", 64), "SSHA256": ("sha256", 32), "SSHA": ("sha1", 20)}
ACCEPTED = frozenset({"ARGON2ID", "ARGON2I", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT",
                      *_SALTED, *(f"{s}.HEX" for s in _SALTED), *(f"{s}.B64" for s in _SALTED)})
_argon = PasswordHasher()


class ForeignHashError(ValueError):
    """A ``{SCHEME}`` value that cannot be imported (Rule 2)."""


def split(stored: str) -> tuple[str, str] | None:
    """``(SCHEME, data)`` of a ``{SCHEME}data`` value, the scheme upper-cased; None otherwise."""
    if not stored.startswith("{"):
        return None
    end = stored.find("}")
    if end < 2:
        return None
    return stored[1:end].upper(), stored[end + 1:]


def check_importable(stored: str) -> str:
    """The value to keep for an imported hash (Rule 1), or ``ForeignHashError`` (Rule 2)."""
    parts = split(stored)
    if parts is None:
        raise ForeignHashError("not a {SCHEME} password value")
    scheme, data = parts
    if scheme not in ACCEPTED:
        raise ForeignHashError(f"password scheme {scheme} is not accepted (weak or cleartext); "
                               "the user needs a new password")
    if not data:
        raise ForeignHashError(f"empty {scheme} hash")
    return f"{{{scheme}}}{data}"


def verify(stored: str, password: str) -> bool:
    """Rule 4: True when ``password`` matches the ``{SCHEME}data`` value ``stored``."""
    parts = split(stored)
    if parts is None:
        return False
    scheme, data = parts
    try:
        if scheme in ("ARGON2ID", "ARGON2I"):
            return _argon.verify(data, password)
        if scheme == "SHA512-CRYPT":
            return bool(sha512_crypt.verify(password, data))
        if scheme == "SHA256-CRYPT":
            return bool(sha256_crypt.verify(password, data))
        if scheme == "BLF-CRYPT":
            raw = data.encode("ascii")
            if raw.startswith(b"$2y$"):  # PHP/Dovecot spelling of the same algorithm as $2b$
                raw = b"$2b$" + raw[4:]
            return bcrypt.checkpw(password.encode("utf-8")[:BCRYPT_MAX], raw)
        base, _, encoding = scheme.partition(".")
        if base in _SALTED:
            algorithm, size = _SALTED[base]
            blob = bytes.fromhex(data) if encoding == "HEX" else base64.b64decode(data, validate=True)
            if len(blob) <= size:
                raise ValueError("no salt after the digest")
            digest, salt = blob[:size], blob[size:]
            mine = hashlib.new(algorithm, password.encode("utf-8") + salt).digest()
            return hmac.compare_digest(mine, digest)
    except VerifyMismatchError:
        return False
    except (InvalidHashError, VerificationError, ValueError, binascii.Error, TypeError) as exc:
        log.warning("stored %s password hash cannot be used: %s", scheme, type(exc).__name__)
        return False
    log.warning("stored password hash has an unknown scheme %s", scheme[:40])
    return False
