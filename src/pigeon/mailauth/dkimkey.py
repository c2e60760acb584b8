"""DKIM key records (RFC 6376 §3.6.1, RFC 8463) and the public-key check of a signature, with
the ``cryptography`` package (OpenSSL).

Rules:
1. ``parse_key_record(record)`` reads a ``<s>._domainkey.<d>`` TXT record once per distinct
   record (a bounded memo: the same few keys come back all day) into a ``KeyRecord``, or a
   problem text: ``v=`` if present is ``DKIM1``; ``k=`` (default ``rsa``) is ``rsa`` or
   ``ed25519``; ``h=`` if present lists ``sha256``; ``s=`` is ``*`` or lists ``email``; an empty
   ``p=`` is a revoked key; ``p=`` is base64 of a DER SubjectPublicKeyInfo or PKCS#1
   RSAPublicKey (RSA), or of the 32-octet raw key (ed25519, RFC 8463 §4). RSA keys must be
   ``MIN_RSA_BITS``..``MAX_RSA_BITS`` bits with an exponent under ``MAX_RSA_EXPONENT_BITS`` bits.
2. ``key_problem(key, algorithm, auid_domain, domain)`` adds the checks that depend on the
   signature: ``k=`` must match ``a=``; ``t=s`` requires the ``i=`` domain to be ``d=`` itself.
3. ``signature_valid(key, header_input, signature)``: rsa-sha256 is RSASSA-PKCS1-v1_5 over
   SHA-256 of the header hash input (RFC 6376 §3.3.1), checked by OpenSSL (``cryptography``);
   ed25519-sha256 is Ed25519 (PureEdDSA) over the SHA-256 digest of that input (RFC 8463 §3),
   checked by libsodium (PyNaCl): about 40 µs against OpenSSL's 85 µs through
   ``cryptography`` on the benchmark machine (docs/benchmarks.md, issue 16 "Measure").
   libsodium is the stricter of the two (it refuses small-order keys and points and
   non-canonical encodings, which no honest signer produces): such a signature is ``fail``.

What can go wrong: any parse failure of a hostile key is a problem text, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from nacl.bindings import crypto_sign_BYTES, crypto_sign_open
from nacl.exceptions import BadSignatureError

from pigeon.mailauth.dkimcanon import TagError, parse_tags

# RFC 8301 §3.2: keys under 1024 bits MUST NOT be considered valid.
MIN_RSA_BITS = 1024
# RFC 8301 §3.2 asks verifiers to handle 1024..4096-bit keys; 8192 is the largest in real use,
# and the cap bounds the modular exponentiation's cost.
MAX_RSA_BITS = 8192
# Real RSA keys use e = 65537 (17 bits); a huge exponent would make verification slow.
MAX_RSA_EXPONENT_BITS = 64


@dataclass(frozen=True)
class Ed25519Key:
    """An ed25519 public key: its 32 raw octets (RFC 8463 §4), as libsodium takes it."""

    raw: bytes


PublicKey = rsa.RSAPublicKey | Ed25519Key


@dataclass(frozen=True)
class KeyRecord:
    kind: str  # "rsa" or "ed25519" (k=)
    key: PublicKey
    strict: bool  # t=s: the i= domain must be d= itself
    testing: bool  # t=y


_WS = re.compile(rb"\s+")


@functools.lru_cache(maxsize=256)  # rule 1: a pure memo of a parse, bounded
def parse_key_record(record: bytes) -> KeyRecord | str:
    """Rule 1."""
    try:
        tags = parse_tags(record)
    except TagError as exc:
        return f"malformed key record: {exc}"
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        return "key record v= is not DKIM1"
    kind = tags.get(b"k", b"rsa").lower()
    if kind not in (b"rsa", b"ed25519"):
        return f"unknown key type k={kind.decode('ascii', 'replace')}"
    if b"h" in tags and b"sha256" not in [h.strip().lower() for h in tags[b"h"].split(b":")]:
        return "key h= does not allow sha256"
    services = [x.strip().lower() for x in tags.get(b"s", b"*").split(b":")]
    if b"*" not in services and b"email" not in services:
        return "key service type s= excludes email"
    p = _WS.sub(b"", tags.get(b"p", b""))
    if not p:
        return "key revoked (empty p=)"
    try:
        raw = base64.b64decode(p, validate=True)
    except binascii.Error:
        return "key p= is not base64"
    key = _rsa_key(raw) if kind == b"rsa" else _ed25519_key(raw)
    if isinstance(key, str):
        return key
    flags = [f.strip().lower() for f in tags.get(b"t", b"").split(b":")]
    return KeyRecord(kind.decode(), key, b"s" in flags, b"y" in flags)


def _rsa_key(der: bytes) -> PublicKey | str:
    key: object
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        try:  # PKCS#1 RSAPublicKey, which some signers publish; OpenSSL reads it as PEM
            pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            return "unparsable RSA key"
    if not isinstance(key, rsa.RSAPublicKey):
        return "k=rsa but p= is not an RSA key"
    numbers = key.public_numbers()
    if key.key_size > MAX_RSA_BITS or numbers.e.bit_length() > MAX_RSA_EXPONENT_BITS:
        return f"RSA key too large ({key.key_size} bits)"
    if key.key_size < MIN_RSA_BITS:
        return f"RSA key too small ({key.key_size} bits, RFC 8301 §3.2)"
    return key


def _ed25519_key(raw: bytes) -> PublicKey | str:
    if len(raw) != 32:
        return "ed25519 key p= is not 32 octets (RFC 8463 §4)"
    return Ed25519Key(raw)


def key_problem(key: KeyRecord, algorithm: str, auid_domain: str, domain: str) -> str:
    """Rule 2: "" when the key may verify this signature."""
    if algorithm.split("-")[0] != key.kind:
        return f"key type k={key.kind} does not match a={algorithm}"
    if key.strict and auid_domain and auid_domain != domain:
        return "key t=s: the i= domain must be d= itself"
    return ""


def signature_valid(key: KeyRecord, header_input: bytes, signature: bytes) -> bool:
    """Rule 3."""
    if isinstance(key.key, Ed25519Key):
        if len(signature) != crypto_sign_BYTES:
            return False
        try:
            crypto_sign_open(signature + hashlib.sha256(header_input).digest(), key.key.raw)
        except BadSignatureError:
            return False
        return True
    try:
        key.key.verify(signature, header_input, _PKCS1V15, _SHA256)
    except InvalidSignature:
        return False
    return True


# Stateless parameter objects, made once rather than per verification.
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()
