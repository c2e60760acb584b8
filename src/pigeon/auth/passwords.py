"""Password hashing (argon2id) and generation.

Rules:
1. Passwords are stored only as argon2id hashes in PHC string form (``$argon2id$v=19$...``),
   with argon2-cffi's default parameters (RFC 9106 §4 second recommended option, adapted by
   argon2-cffi); the parameters travel inside the hash, so old hashes keep verifying after the
   defaults change, and ``needs_rehash`` says when to upgrade one.
2. Hashing and verifying are slow on purpose (tens of milliseconds, 64 MiB of memory): callers
   on the event loop run them in a thread.
3. A password is never logged, never put in an exception message, never returned.
4. ``verify_password`` answers only True or False: a wrong password, an empty one, or a
   corrupt stored hash are all False (the corrupt hash is logged, without the password).
5. A stored value of the form ``{SCHEME}data`` is a hash imported from Dovecot
   (``pigeon user import``, ``schemes``): it verifies by its own scheme and always needs a
   rehash, so the next successful login replaces it with argon2id.

What can go wrong: ``hash_password`` raises ``ValueError`` for an empty password or one too long
to be a password (more than 4096 bytes); nothing else is expected.
"""

from __future__ import annotations

import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from pigeon.auth import schemes

log = logging.getLogger(__name__)

# No real password is this long; the bound stops a client from making the server hash megabytes
# (argon2 itself would take up to 2^32 - 1 bytes). Dovecot and Postfix SASL use similar caps.
MAX_PASSWORD_BYTES = 4096

# 16 characters from 57 symbols ≈ 93 bits of entropy (NIST SP 800-63B asks ≥ 8 characters for
# a memorized secret; this is for a generated demo password, shown once).
GENERATED_LENGTH = 16
# Letters and digits without the look-alikes 0/O, 1/l/I, so a password read off a terminal is
# typed right.
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

_hasher = PasswordHasher()  # stateless and thread-safe: it only holds the cost parameters


def hash_password(password: str) -> str:
    """Return the argon2id PHC string for ``password``."""
    if not password:
        raise ValueError("the password is empty")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; never raises."""
    if not password or len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    if stored_hash.startswith("{"):  # Rule 5
        return schemes.verify(stored_hash, password)
    try:
        return _hasher.verify(stored_hash, password)
    except VerifyMismatchError:
        log.debug("password does not match the stored hash")
        return False
    except (InvalidHashError, VerificationError) as exc:
        log.warning("stored password hash cannot be used: %s", type(exc).__name__)
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when ``stored_hash`` was made with other parameters than today's defaults, or is
    not an argon2id hash of ours at all (Rule 5)."""
    if stored_hash.startswith("{"):
        return True
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except (InvalidHashError, ValueError) as exc:
        log.warning("stored password hash cannot be parsed: %s", type(exc).__name__)
        return True


def generate_password(length: int = GENERATED_LENGTH) -> str:
    """A random password of ``length`` characters drawn with ``secrets``."""
    if length < 8:
        raise ValueError("a generated password has at least 8 characters")
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
