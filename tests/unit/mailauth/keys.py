"""Real DKIM keys for tests: RSA (cryptography) and ed25519 (RFC 8463), and signing with dkimpy."""

from __future__ import annotations

import base64
import functools

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


@functools.cache
def rsa_key(bits: int = 2048) -> tuple[bytes, str]:
    """(private key PEM, DNS TXT record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@functools.cache
def ed25519_key() -> tuple[bytes, str]:
    """(private key as dkimpy wants it: base64 seed, DNS TXT record)."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed), "v=DKIM1; k=ed25519; p=" + base64.b64encode(pub).decode()


MESSAGE = (b"From: Alice <alice@example.net>\r\nTo: bob@example.org\r\nSubject: hello\r\n"
           b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.net>\r\n\r\n"
           b"Hello Bob,\r\n\r\nthe body.\r\n")


def sign(message: bytes, domain: str, selector: str = "sel", *, ed: bool = False,
         canon: tuple[bytes, bytes] = (b"relaxed", b"relaxed"), length: bool = False,
         identity: bytes | None = None) -> bytes:
    """The message with one more DKIM-Signature on top."""
    priv = ed25519_key()[0] if ed else rsa_key()[0]
    sig = dkim.sign(message, selector.encode(), domain.encode(), priv,
                    signature_algorithm=b"ed25519-sha256" if ed else b"rsa-sha256",
                    canonicalize=canon, length=length, identity=identity,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return bytes(sig) + message
