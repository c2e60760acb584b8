"""SASL for every login: the PLAIN and LOGIN mechanisms (sans-IO) and the ``Authenticator``.

A ``SaslExchange`` turns the client's base64 lines into either a ``Challenge`` to send (``334``
in SMTP, ``+`` in IMAP and POP3), ``Credentials`` to verify, or a ``Failure`` saying why not. It
does no I/O. The ``Authenticator`` starts exchanges (checking the mechanism, the channel's
security and the throttle) and verifies credentials against the directory in a worker thread,
under the brute-force throttle. SMTP, IMAP and POP3 share it; each maps the outcome to its own
words (``smtpd.auth``, ``imapd.auth``, ``pop3d.login``): nothing here knows a protocol's replies
(the import-linter contract "SMTP replies only on the SMTP side").

Mechanisms shipped: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login-00). SCRAM-SHA-256
(RFC 7677) is not offered: it needs, per user, a salt and the StoredKey/ServerKey derived from the
password with PBKDF2, and Pigeon stores only argon2id hashes, from which those keys cannot be
computed. Offering it would mean storing the SCRAM keys at ``user add``/``passwd`` (a schema
change, and a second password-equivalent secret at rest); until then TLS protects PLAIN/LOGIN.

Rules:
1. Mechanisms that send the password in clear are offered and accepted only on a protected
   channel: after TLS, or on loopback when ``[auth] allow_plaintext_on_loopback`` is set
   (``plaintext_allowed``). Otherwise the exchange fails with ``ENCRYPTION_REQUIRED``.
2. Every way a login can fail is one ``AuthFailure``, in no protocol's words: unknown
   mechanism, encryption required, cancelled by the client (``*``, RFC 4954 §4), not base64,
   malformed, bad credentials, temporarily unavailable (the directory failed), throttled. After
   ``THROTTLED`` the caller closes the connection (``close``). The SMTP replies of each (RFC 4954
   §4, §6) are in ``smtpd.auth``, the IMAP ones in ``imapd.auth``, the POP3 ones in
   ``pop3d.login``.
3. Base64 is decoded strictly (RFC 4954 §4: the server MUST reject invalid base64); decoded
   text must be UTF-8 (RFC 4616 §2); a PLAIN message must have exactly two NULs.
4. PLAIN's authorization identity, when given, must name the same account as the
   authentication identity: Pigeon has no proxy authorization (RFC 4616 §2 lets the server
   refuse); a mismatch is a failed login.
5. Users log in with their full address; the identity returned is its folded form
   (lower-cased), as the directory stores it.
6. Passwords are verified off the event loop (argon2 is slow on purpose), at most
   ``max_concurrent`` at a time (each argon2id verification takes 64 MiB).
7. A password, a base64 payload or decoded credentials are never logged, never put in an
   exception, never shown by ``repr``. Account names in log lines are sanitised.

What can go wrong: nothing raises to the caller; every problem is an ``AuthFailure`` (rule 2).
An unexpected error while verifying is logged and is ``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Protocol

from pigeon.auth.passwords import MAX_PASSWORD_BYTES
from pigeon.auth.throttle import AuthThrottle
from pigeon.core.address import MAX_PATH, AddressError, parse_address
from pigeon.core.clock import Clock

log = logging.getLogger(__name__)

MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")  # the order offered in EHLO
# argon2id with argon2-cffi's defaults takes 64 MiB per verification: 4 at once bounds that to
# 256 MiB however many clients log in together; more would only queue on the CPU anyway.
DEFAULT_MAX_CONCURRENT_VERIFY = 4
# The longest account name worth looking up: an address is at most 256 octets (RFC 5321 §4.5.3.1.3).
MAX_AUTHCID_BYTES = MAX_PATH
# How much of a client-chosen account name a log line shows.
LOG_NAME_LIMIT = 100

_LOGIN_USERNAME = base64.b64encode(b"Username:").decode("ascii")  # draft-murchison-sasl-login §2
_LOGIN_PASSWORD = base64.b64encode(b"Password:").decode("ascii")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


class AuthFailure(enum.Enum):
    """Why a login did not succeed (rule 2); each protocol says it in its own words."""

    MECHANISM = "unknown mechanism"
    ENCRYPTION_REQUIRED = "encryption required"  # rule 1
    CANCELLED = "cancelled by the client"
    BAD_BASE64 = "not base64"  # rule 3
    MALFORMED = "malformed response"  # rule 3
    BAD_CREDENTIALS = "bad credentials"  # also rule 4's proxy authorization
    UNAVAILABLE = "temporarily unavailable"  # the directory failed
    THROTTLED = "throttled"  # the brute-force throttle refused: close the connection

    @property
    def close(self) -> bool:
        """The caller must close the connection after answering."""
        return self is AuthFailure.THROTTLED


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this to the client and feed its answer to ``SaslExchange.respond``."""

    text: str  # already base64 (may be empty: SMTP "334 ", IMAP/POP3 "+ ")


@dataclass(frozen=True, slots=True)
class Credentials:
    authcid: str
    password: str = field(repr=False)
    authzid: str = ""

    def __repr__(self) -> str:  # rule 7
        return f"Credentials(authcid={_printable(self.authcid)!r}, password=<redacted>)"


@dataclass(frozen=True, slots=True)
class Failure:
    kind: AuthFailure

    @property
    def close(self) -> bool:
        """The caller must close the connection after answering."""
        return self.kind.close


Step = Challenge | Credentials | Failure


def _printable(name: str) -> str:
    return _UNPRINTABLE.sub("?", name)[:LOG_NAME_LIMIT]


def _decode(line: str) -> bytes | None:
    """Strict base64 (rule 3); None when it is not."""
    try:
        return base64.b64decode(line.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


class SaslExchange:
    """One AUTH exchange. Call ``start`` once, then ``respond`` while it returns Challenge."""

    mechanism = ""

    def __init__(self) -> None:
        self.done = False

    def start(self, initial: str | None) -> Step:
        """``initial``: the base64 initial response, ``""`` for RFC 4954's ``=``, or None."""
        raise NotImplementedError

    def respond(self, line: str) -> Step:
        if self.done:
            raise ValueError("the exchange is over")
        if line.strip() == "*":  # RFC 4954 §4: the client cancels
            return self._end(Failure(AuthFailure.CANCELLED))
        data = _decode(line.strip())
        if data is None:
            return self._end(Failure(AuthFailure.BAD_BASE64))
        return self._step(data)

    def _step(self, data: bytes) -> Step:
        raise NotImplementedError

    def _end(self, step: Step) -> Step:
        if not isinstance(step, Challenge):
            self.done = True
        return step


class PlainExchange(SaslExchange):
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` in one message."""

    mechanism = "PLAIN"

    def start(self, initial: str | None) -> Step:
        if initial is None:
            return Challenge("")  # RFC 4954 §4: an empty challenge asks for the initial response
        if initial == "":
            return self._end(Failure(AuthFailure.MALFORMED))  # "=": an empty message has no NULs
        return self.respond(initial)

    def _step(self, data: bytes) -> Step:
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return self._end(Failure(AuthFailure.MALFORMED))
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return self._end(Failure(AuthFailure.MALFORMED))
        return self._end(Credentials(authcid, password, authzid))


class LoginExchange(SaslExchange):
    """draft-murchison-sasl-login: ``Username:`` then ``Password:``, each answered in base64."""

    mechanism = "LOGIN"

    def __init__(self) -> None:
        super().__init__()
        self._username: str | None = None

    def start(self, initial: str | None) -> Step:
        if initial is None:
            return Challenge(_LOGIN_USERNAME)
        return self.respond(initial)  # some clients send the user name as an initial response

    def _step(self, data: bytes) -> Step:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._end(Failure(AuthFailure.MALFORMED))
        if self._username is None:
            self._username = text
            return Challenge(_LOGIN_PASSWORD)
        return self._end(Credentials(self._username, text))


_EXCHANGES: dict[str, type[SaslExchange]] = {"PLAIN": PlainExchange, "LOGIN": LoginExchange}


def is_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def plaintext_allowed(tls_active: bool, peer_ip: str, allow_on_loopback: bool) -> bool:
    """Rule 1: may PLAIN/LOGIN be offered and used on this connection?"""
    return tls_active or (allow_on_loopback and is_loopback(peer_ip))


def account_name(authcid: str) -> str:
    """Rule 5: the folded account an authentication identity names."""
    try:
        return parse_address(authcid.strip(), utf8=True).key
    except AddressError:
        return authcid.strip().lower()


class PasswordVerifier(Protocol):
    """The directory seam (``pigeon.directory.Directory`` satisfies it)."""

    def verify_password(self, address: str, password: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """The credentials were verified: ``user`` is the folded account (rule 5)."""

    user: str


AuthOutcome = LoggedIn | Failure


class Authenticator:
    def __init__(
        self,
        verifier: PasswordVerifier,
        throttle: AuthThrottle,
        clock: Clock,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT_VERIFY,
    ) -> None:
        self.verifier = verifier
        self.throttle = throttle
        self.clock = clock
        self._slots = asyncio.Semaphore(max_concurrent)
        self.on_failure: Callable[[], None] | None = None  # each refused login (the metrics)

    @staticmethod
    def mechanisms(secure: bool) -> tuple[str, ...]:
        """What to advertise (``AUTH PLAIN LOGIN`` in EHLO): nothing on an unprotected channel."""
        return MECHANISMS if secure else ()

    def begin(self, mechanism: str, initial: str | None, *, secure: bool, ip: str) -> tuple[SaslExchange | None, Step]:
        """Start an exchange for ``AUTH mechanism [initial]``. ``secure`` is
        ``plaintext_allowed(...)`` for this connection. Returns the exchange (None when refused
        at once) and its first step."""
        if self.throttle.check(ip).refused:
            log.warning("auth: refused AUTH from throttled client %s", ip)
            return None, Failure(AuthFailure.THROTTLED)
        cls = _EXCHANGES.get(mechanism.upper())
        if cls is None:
            return None, Failure(AuthFailure.MECHANISM)
        if not secure:
            return None, Failure(AuthFailure.ENCRYPTION_REQUIRED)  # rule 1
        exchange = cls()
        return exchange, exchange.start(initial)

    async def verify(self, credentials: Credentials, ip: str) -> AuthOutcome:
        """Check the credentials under the throttle (rules 4-6); sleeps the throttle's delay
        before answering a failure."""
        account = account_name(credentials.authcid)
        shown = _printable(account)
        verdict = self.throttle.check(ip, account)
        if verdict.refused:
            log.warning("auth: refused login for %s from throttled client %s", shown, ip)
            if self.on_failure is not None:
                self.on_failure()
            return Failure(AuthFailure.THROTTLED)
        ok = False
        if self._plausible(credentials, account):
            try:
                async with self._slots:
                    ok = await asyncio.to_thread(self.verifier.verify_password, account, credentials.password)
            except Exception:
                log.exception("auth: verifying the password of %s failed", shown)
                return Failure(AuthFailure.UNAVAILABLE)
        if ok:
            self.throttle.success(ip, account)
            log.info("auth: %s logged in from %s", shown, ip)
            return LoggedIn(account)
        verdict = self.throttle.failure(ip, account)
        log.warning("auth: failed login for %s from %s", shown, ip)
        if self.on_failure is not None:
            self.on_failure()
        if verdict.delay > 0:
            await self.clock.sleep(verdict.delay)
        if verdict.refused:
            return Failure(AuthFailure.THROTTLED)
        return Failure(AuthFailure.BAD_CREDENTIALS)

    @staticmethod
    def _plausible(credentials: Credentials, account: str) -> bool:
        """Bounds and rule 4, checked before any argon2 work."""
        if not account or len(account.encode("utf-8")) > MAX_AUTHCID_BYTES:
            return False
        if not credentials.password or len(credentials.password.encode("utf-8")) > MAX_PASSWORD_BYTES:
            return False
        return not credentials.authzid or account_name(credentials.authzid) == account
