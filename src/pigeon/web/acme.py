"""Certificates from an ACME server (RFC 8555): order, answer http-01 or tls-alpn-01, store, renew.

What lives here: ``AcmeIssuer`` (one order, blocking: the ``acme`` library speaks HTTPS through
``requests``; the caller runs it in a thread), ``Challenges`` (the http-01 answers the web
endpoint serves), ``CertStore`` (the files in ``data_dir/acme/``) and ``Renewer`` (the task
that keeps the certificate fresh).

Rules:
1. The JWS, nonces, account and order objects are the ``acme`` and ``josepy`` libraries';
   nothing of RFC 8555's wire format is written here.
2. The names are ``hostname`` and, for each local domain, ``mta-sts.<domain>`` and
   ``autoconfig.<domain>`` (``certificate_names``), in one certificate (SAN list, RFC 8555
   §7.4: one order may carry several identifiers). A changed list (a domain added) orders anew.
3. http-01 (RFC 8555 §8.3): the key authorization is served at
   ``/.well-known/acme-challenge/<token>`` as ``application/octet-stream`` until the order ends.
3a. tls-alpn-01 (RFC 8737): the ``acme`` library no longer knows this challenge (acme 5
   removed it; it arrives as ``UnrecognizedChallenge``), so the pieces that are not JWS are
   made here: the key authorization (RFC 8555 §8.1: token "." base64url(SHA-256 JWK
   thumbprint)), and a self-signed certificate whose only subjectAltName is the name validated
   (§3) with the critical ``id-pe-acmeIdentifier`` extension holding the DER OCTET STRING of
   SHA-256(key authorization) (§3, §6.1). It is handed to ``AlpnStore.put`` (``net.tls``
   serves it on the https listener for ALPN ``acme-tls/1``) until the order ends. The answer
   is posted through the library (an empty JSON object, RFC 8555 §7.5.1).
4. Files: ``account.key`` (the account's JWK, RFC 8555 §7.3), ``cert.pem`` (the full chain)
   and ``key.pem``, each mode 0600, written to a temporary name, fsynced, renamed, and the
   directory fsynced (``durable.io``).
5. The key is renamed into place before the certificate: a crash between the two leaves a new
   key beside the old certificate, which ``current()`` detects (they are not a pair) and
   orders again; the TLS reload never takes a pair that does not match (``net.tls`` rule 4).
6. Renewal at two thirds of the lifetime (Let's Encrypt's advice: 60 days of 90); a failed
   attempt is retried after ``RETRY_FIRST`` seconds, doubling up to ``RETRY_MAX``.
7. ``[tls] cert/key`` take precedence (``app``): the Renewer runs only when they are not set.

What can go wrong: ``AcmeFailed`` wraps what the library or the server said (a refused
challenge, an unreachable directory, a bad ``ca_file``); the Renewer logs it and retries.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast
from pathlib import Path

from josepy.b64 import b64encode
from josepy.jwk import JWKRSA
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pigeon.config.model import AcmeConfig
from pigeon.core.clock import Clock
from pigeon.durable.io import REAL

log = logging.getLogger(__name__)

ACME_DIR = "acme"  # under data_dir
ACCOUNT_KEY = "account.key"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
# RSA 2048: accepted by every mail client and by Let's Encrypt (NIST SP 800-57: fine to 2030).
KEY_BITS = 2048
# How long one order may take from the answered challenges to the certificate (Let's Encrypt
# validates within seconds; Pebble with PEBBLE_VA_NOSLEEP at once).
ORDER_DEADLINE = datetime.timedelta(seconds=120)
# Rule 6: first retry after a minute, then doubling, at most every 6 hours.
RETRY_FIRST = 60.0
RETRY_MAX = 6 * 3600.0
# Rule 6: renew when this fraction of the lifetime has passed.
RENEW_AT = 2 / 3
USER_AGENT = "pigeon-acme"
TLS_ALPN_01 = "tls-alpn-01"
# RFC 8737 §6.1: id-pe-acmeIdentifier (the PKIX certificate extension arc, 1.3.6.1.5.5.7.1, 31).
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")
# The challenge certificate is thrown away within minutes; a week covers any clock skew.
ALPN_CERT_DAYS = 7


class AlpnStore(Protocol):
    """Where a tls-alpn-01 certificate is served from (``net.tls.AlpnChallenges``)."""

    def put(self, name: str, cert_pem: bytes, key_pem: bytes) -> None: ...

    def remove(self, name: str) -> None: ...


class _TlsAlpn01Response(challenges.KeyAuthorizationChallengeResponse):
    """Rule 3a: the answer; serialised as ``{}`` like every response (not registered in the
    library's type table: nothing global changes)."""

    typ = TLS_ALPN_01


def key_authorization(token: str, account_key: JWKRSA) -> str:
    """RFC 8555 §8.1."""
    thumbprint = account_key.public_key().thumbprint(hash_function=hashes.SHA256)
    return f"{token}.{b64encode(thumbprint).decode()}"


def tls_alpn_certificate(name: str, key_auth: str) -> tuple[bytes, bytes]:
    """Rule 3a: the self-signed validation certificate for ``name`` (PEM cert, PEM key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key_auth.encode("ascii"))
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=ALPN_CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            # the extnValue is the DER of Authorization ::= OCTET STRING (SIZE (32)): tag 4, length 32
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest.finalize()),
                           critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class AcmeFailed(Exception):
    """An order did not end with a certificate; the message says why."""


def certificate_names(hostname: str, domains: Sequence[str]) -> list[str]:
    """Rule 2."""
    names = [hostname]
    for domain in domains:
        for name in (f"mta-sts.{domain}", f"autoconfig.{domain}"):
            if name not in names:
                names.append(name)
    return names


class Challenges:
    """Rule 3: token → key authorization, for the web endpoint."""

    def __init__(self, alpn: AlpnStore | None = None) -> None:
        self._answers: dict[str, str] = {}
        self.alpn = alpn  # rule 3a: where tls-alpn-01 certificates go

    def put(self, token: str, validation: str) -> None:
        self._answers[token] = validation

    def remove(self, token: str) -> None:
        self._answers.pop(token, None)

    def get(self, token: str) -> str | None:
        return self._answers.get(token)


@dataclass(frozen=True, slots=True)
class Issued:
    cert: Path
    key: Path
    names: tuple[str, ...]
    not_before: float
    not_after: float

    def renew_at(self) -> float:
        """Rule 6."""
        return self.not_before + (self.not_after - self.not_before) * RENEW_AT


class CertStore:
    """Rules 4 and 5: the files in ``data_dir/acme/``."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / ACME_DIR
        self.cert = self.directory / CERT_FILE
        self.key = self.directory / KEY_FILE

    def current(self) -> Issued | None:
        """The stored certificate, or None when there is none or it does not match its key."""
        try:
            chain = self.cert.read_bytes()
            key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
            leaf = x509.load_pem_x509_certificate(chain)
        except (OSError, ValueError) as exc:
            if self.cert.exists() or self.key.exists():
                log.warning("acme: the stored certificate cannot be used (%s); ordering a new one", exc)
            return None
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):  # rule 5
            log.warning("acme: %s does not match %s; ordering a new one", self.cert, self.key)
            return None
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        return Issued(self.cert, self.key, names, leaf.not_valid_before_utc.timestamp(),
                      leaf.not_valid_after_utc.timestamp())

    def account_key(self) -> JWKRSA:
        path = self.directory / ACCOUNT_KEY
        try:
            return JWKRSA.json_loads(path.read_text())
        except FileNotFoundError:
            pass
        key = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS))
        self._write(path, key.json_dumps().encode())
        return key

    def save(self, key_pem: bytes, chain_pem: bytes) -> None:
        """Rules 4, 5: key then certificate, each durable before its name points at it."""
        self._write(self.key, key_pem)
        self._write(self.cert, chain_pem)

    def _write(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = REAL.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[REAL.write(fd, view):]
            REAL.fsync(fd)
        finally:
            REAL.close(fd)
        REAL.rename(tmp, path)
        REAL.fsync_dir(self.directory)


class AcmeIssuer:
    """One order for ``names`` (rule 1); blocking, run it in a thread."""

    def __init__(self, settings: AcmeConfig, store: CertStore, challenges: Challenges) -> None:
        self.settings = settings
        self.store = store
        self.challenges = challenges

    def _client(self) -> tuple[client.ClientV2, JWKRSA]:
        key = self.store.account_key()
        # Passed to requests as ``verify=``, which takes a CA bundle path as well as a bool
        # (the library annotates it bool only).
        verify = cast(bool, str(self.settings.ca_file) if self.settings.ca_file else True)
        net = client.ClientNetwork(key, user_agent=USER_AGENT, verify_ssl=verify)
        directory = client.ClientV2.get_directory(self.settings.directory, net)
        acme = client.ClientV2(directory, net=net)
        contact = self.settings.email
        reg = messages.NewRegistration.from_data(email=contact, terms_of_service_agreed=True)
        try:
            acme.new_account(reg)
        except errors.ConflictError as exc:  # RFC 8555 §7.3.1: the key has an account already
            net.account = messages.RegistrationResource(body=messages.Registration(), uri=exc.location)
        return acme, key

    def issue(self, names: Sequence[str]) -> None:
        try:
            self._issue(list(names))
        except AcmeFailed:
            raise
        except Exception as exc:  # the library's errors, requests', a refused CSR...
            raise AcmeFailed(f"{type(exc).__name__}: {exc}") from exc

    def _issue(self, names: list[str]) -> None:
        acme, account_key = self._client()
        private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, names))
        tokens: list[str] = []
        alpn_names: list[str] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # RFC 8555 §7.1.4: a valid authorization may be reused
                name = str(authz.body.identifier.value)
                if self.settings.challenge == TLS_ALPN_01:
                    alpn_names.append(name)
                    self._answer_tls_alpn(acme, account_key, name, authz.body.challenges)
                    continue
                body = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
                if body is None:
                    raise AcmeFailed(f"{name}: the server offers no http-01 challenge")
                response, validation = body.response_and_validation(account_key)
                token = body.chall.encode("token")
                self.challenges.put(token, validation)
                tokens.append(token)
                acme.answer_challenge(body, response)
            deadline = datetime.datetime.now() + ORDER_DEADLINE
            done = acme.poll_and_finalize(order, deadline=deadline)
        finally:
            for token in tokens:
                self.challenges.remove(token)
            for name in alpn_names:
                if self.challenges.alpn is not None:
                    self.challenges.alpn.remove(name)
        chain = done.fullchain_pem
        if not chain:
            raise AcmeFailed("the order ended without a certificate")
        self.store.save(key_pem, chain.encode())
        log.info("acme: certificate issued for %s", ", ".join(names))


    def _answer_tls_alpn(self, acme: client.ClientV2, account_key: JWKRSA, name: str,
                         offered: Sequence[messages.ChallengeBody]) -> None:
        """Rule 3a."""
        store = self.challenges.alpn
        if store is None:
            raise AcmeFailed("tls-alpn-01 needs the https listener ([listen] https)")
        body = next((c for c in offered if isinstance(c.chall, challenges.UnrecognizedChallenge)
                     and c.chall.jobj.get("type") == TLS_ALPN_01), None)
        token = body.chall.jobj.get("token") if body is not None else None
        if body is None or not isinstance(token, str):
            raise AcmeFailed(f"{name}: the server offers no tls-alpn-01 challenge")
        key_auth = key_authorization(token, account_key)
        store.put(name, *tls_alpn_certificate(name, key_auth))
        acme.answer_challenge(body, _TlsAlpn01Response(key_authorization=key_auth))


class Renewer:
    """Rules 6 and 7: keeps ``store`` holding a fresh certificate for ``names()``; calls
    ``installed()`` after each new one."""

    def __init__(self, issuer: AcmeIssuer, names: Callable[[], list[str]], clock: Clock,
                 installed: Callable[[], Awaitable[None]]) -> None:
        self.issuer = issuer
        self.names = names
        self.clock = clock
        self.installed = installed
        self.failures = 0

    def due_in(self, current: Issued | None) -> float:
        """Seconds until the next order (0: now)."""
        if current is None or sorted(current.names) != sorted(self.names()):
            return 0.0
        return max(0.0, current.renew_at() - self.clock.now())

    async def run(self) -> None:
        while True:
            wait = self.due_in(self.issuer.store.current())
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            names = self.names()
            try:
                await asyncio.to_thread(self.issuer.issue, names)
            except AcmeFailed as exc:
                delay = min(RETRY_MAX, RETRY_FIRST * 2 ** self.failures)
                self.failures += 1
                log.error("acme: ordering a certificate for %s failed (attempt %d): %s; next try in %.0f s",
                          ", ".join(names), self.failures, exc, delay)
                await self.clock.sleep(delay)
                continue
            self.failures = 0
            await self.installed()
