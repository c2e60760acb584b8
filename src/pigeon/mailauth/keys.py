"""DKIM signing keys of the local domains, kept in the data directory.

Layout: ``data_dir/dkim/<domain>/<selector>.key`` (the private key, PEM PKCS#8, mode 0600, in
a directory of mode 0700) and ``data_dir/dkim/<domain>/signing`` (the selectors that sign, one
per line). Every ``.key`` file of a domain is *published*: ``pigeon dns`` prints its record.

Rules:
1. Each local domain has one Ed25519 key (RFC 8463) and one RSA-2048 key (RFC 6376 §3.3.3:
   1024-4096; 2048 is what receivers expect today). ``ensure`` makes the pair when the domain has
   none: at ``domain add`` and at every start, so no admin step is needed.
2. Selectors are the year and month of creation plus the algorithm letter: ``202612e``,
   ``202612r``. A second pair in the same month gets a counter: ``202612e2``, ``202612r2``.
3. ``rotate`` makes a new pair and makes it the signing pair; the old keys stay published (their
   ``.key`` files stay) until ``retire`` removes them, so that mail in flight still verifies.
   The signing pair cannot be retired.
4. Key files are written to a temporary name with mode 0600, fsynced and renamed into place
   (never a half-written key, never a moment readable by others); the ``signing`` file likewise.
5. ``signing_keys`` caches what it read and reads again when the ``signing`` file changes (a
   rotation by the command line reaches a running server without a restart).
6. Domain names are lower-cased A-labels (``to_ascii`` is the caller's); a name with ``/``, a
   leading ``.`` or empty is refused with ``ValueError``, so no path escapes ``data_dir/dkim``.

What can go wrong: ``OSError`` from the file system (the caller logs and signs nothing: mail is
sent unsigned rather than held); ``ValueError`` for a bad domain, unknown selector or an
attempt to retire a signing key; a corrupt key file is logged and skipped.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from pigeon.durable.io import REAL, unlink_quietly, write_file_synced

log = logging.getLogger(__name__)

Algorithm = Literal["ed25519", "rsa"]
RSA_BITS = 2048  # RFC 8301 §3.2: at least 1024, SHOULD 2048 for signing
RSA_EXPONENT = 65537
_LETTER: dict[Algorithm, str] = {"ed25519": "e", "rsa": "r"}
_SELECTOR = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # RFC 6376 §3.1: a sub-domain label


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    pem: bytes  # PKCS#8 private key

    def signing_key(self) -> bytes:
        """The key as dkimpy takes it: PEM for RSA, base64 of the 32-octet seed for Ed25519."""
        key = serialization.load_pem_private_key(self.pem, password=None)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
            return base64.b64encode(raw)
        return self.pem

    def public_b64(self) -> str:
        """``p=`` of the key record: the raw 32 octets (RFC 8463 §4.2) or the DER
        SubjectPublicKeyInfo (RFC 6376 §3.6.1)."""
        key = serialization.load_pem_private_key(self.pem, password=None)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        elif isinstance(key, rsa.RSAPrivateKey):
            raw = key.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        else:
            raise ValueError(f"{self.domain}/{self.selector}: unsupported key type")
        return base64.b64encode(raw).decode("ascii")

    def txt_record(self) -> str:
        """The TXT data of ``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.1, RFC 8463 §4.2)."""
        k = "ed25519" if self.algorithm == "ed25519" else "rsa"
        return f"v=DKIM1; k={k}; p={self.public_b64()}"


def check_domain(domain: str) -> str:
    d = domain.strip().lower().rstrip(".")
    if not d or "/" in d or "\\" in d or d.startswith(".") or "\0" in d:
        raise ValueError(f"bad domain name for a DKIM key: {domain!r}")
    return d


def _make(algorithm: Algorithm) -> bytes:
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    """Rule 4."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    unlink_quietly(tmp)  # a left-over of a crash in this very step
    write_file_synced(tmp, data)  # the key's bytes on disk before its name
    REAL.rename(tmp, path)
    REAL.fsync_dir(path.parent)  # the name on disk before the key is published in DNS


class KeyStore:
    def __init__(self, root: Path) -> None:
        self.root = root  # data_dir/dkim
        self._cache: dict[str, tuple[int, list[DkimKey]]] = {}

    def _dir(self, domain: str) -> Path:
        return self.root / check_domain(domain)

    def _signing_file(self, domain: str) -> Path:
        return self._dir(domain) / "signing"

    def _read_key(self, domain: str, selector: str) -> DkimKey | None:
        path = self._dir(domain) / f"{selector}.key"
        try:
            pem = path.read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
        except (OSError, ValueError, TypeError) as exc:
            log.error("dkim: key %s unusable: %s", path, exc)
            return None
        algorithm: Algorithm = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa"
        return DkimKey(check_domain(domain), selector, algorithm, pem)

    def published(self, domain: str) -> list[DkimKey]:
        """Every key of ``domain`` (signing and kept), by selector."""
        d = self._dir(domain)
        if not d.is_dir():
            return []
        out = []
        for path in sorted(d.glob("*.key")):
            key = self._read_key(domain, path.stem)
            if key is not None:
                out.append(key)
        return out

    def signing_selectors(self, domain: str) -> list[str]:
        try:
            text = self._signing_file(domain).read_text("ascii")
        except FileNotFoundError:
            return []
        return [s for s in text.split() if _SELECTOR.match(s)]

    def signing_keys(self, domain: str) -> list[DkimKey]:
        """The keys that sign mail of ``domain`` (Ed25519 first), cached (rule 5)."""
        domain = check_domain(domain)
        try:
            stamp = self._signing_file(domain).stat().st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._cache.get(domain)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        keys = [k for s in self.signing_selectors(domain) if (k := self._read_key(domain, s)) is not None]
        keys.sort(key=lambda k: k.algorithm != "ed25519")
        self._cache[domain] = (stamp, keys)
        return keys

    def domains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def ensure(self, domain: str, now: float | None = None) -> bool:
        """Rule 1: make the pair when ``domain`` has no signing key; True when made."""
        if self.signing_selectors(domain):
            return False
        self.rotate(domain, now)
        return True

    def rotate(self, domain: str, now: float | None = None) -> list[str]:
        """Rule 3: a new pair becomes the signing pair; returns its selectors."""
        d = self._dir(domain)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        stamp = time.strftime("%Y%m", time.gmtime(time.time() if now is None else now))
        n = 1
        while True:  # rule 2
            suffix = "" if n == 1 else str(n)
            names = {a: f"{stamp}{_LETTER[a]}{suffix}" for a in ("ed25519", "rsa")}
            if not any((d / f"{s}.key").exists() for s in names.values()):
                break
            n += 1
        for algorithm, selector in names.items():
            _write_private(d / f"{selector}.key", _make(algorithm))  # type: ignore[arg-type]
        _write_private(self._signing_file(domain), ("\n".join(names.values()) + "\n").encode("ascii"))
        log.info("dkim: %s: new keys %s", check_domain(domain), ", ".join(names.values()))
        return list(names.values())

    def retire(self, domain: str, selector: str) -> None:
        """Rule 3: stop publishing a key that no longer signs."""
        if selector in self.signing_selectors(domain):
            raise ValueError(f"{selector} signs mail of {domain}; rotate first")
        path = self._dir(domain) / f"{selector}.key"
        if not _SELECTOR.match(selector) or not path.exists():
            raise ValueError(f"no DKIM key {selector} for {domain}")
        path.unlink()
        log.info("dkim: %s: key %s retired", check_domain(domain), selector)
