"""DANE for SMTP (RFC 7672): which TLSA records are usable, and whether a peer's chain matches.

Rules:
1. A TLSA record is usable when its usage is DANE-TA(2) or DANE-EE(3), its selector Cert(0) or
   SPKI(1), its matching type Full(0), SHA2-256(1) or SHA2-512(2), and a digest has its length
   (32 or 64 octets). Anything else is skipped with a reason (RFC 7672 §3.1.3: PKIX-TA(0) and
   PKIX-EE(1) are not used for SMTP; unknown parameters are unusable, RFC 6698 §4.1).
2. A secure TLSA RRset with records, none usable, means "TLS required, no authentication"
   (RFC 7672 §2.2: the connection is still encrypted, opportunistically).
3. ``match_chain(chain, records, names, now)``: the chain matches when a DANE-EE(3) record
   matches the leaf (no name and no expiry check: RFC 7672 §3.1.1), or a DANE-TA(2) record
   matches a certificate of the chain above the leaf and the leaf chains to it, is valid at
   ``now`` and names one of ``names`` (the MX host name, RFC 7672 §3.2.2: the TLSA base domain)
   — the path check is cryptography's X.509 verifier with that certificate as the only anchor.
   A DANE-TA(2) record for a key that is not in the chain cannot be checked and does not match.
4. ``match_chain`` returns None on a match, else the reason (for the log and TLS-RPT).

What can go wrong: a certificate that cannot be parsed is a mismatch (with its reason), never an
exception.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification

DANE_TA = 2  # RFC 7218 mnemonics
DANE_EE = 3
DIGEST_LENGTH = {1: 32, 2: 64}  # SHA2-256, SHA2-512
MAX_TLSA_DATA = 8192  # a Full(0) certificate larger than this is bad input, not a certificate


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    def problem(self) -> str | None:
        """Rule 1: why the record is unusable, or None."""
        if self.usage not in (DANE_TA, DANE_EE):
            return f"usage {self.usage} is not DANE-TA(2) or DANE-EE(3)"
        if self.selector not in (0, 1):
            return f"unknown selector {self.selector}"
        if self.mtype not in (0, 1, 2):
            return f"unknown matching type {self.mtype}"
        want = DIGEST_LENGTH.get(self.mtype)
        if want is not None and len(self.data) != want:
            return f"digest of {len(self.data)} octets for matching type {self.mtype} (want {want})"
        if self.mtype == 0 and not 0 < len(self.data) <= MAX_TLSA_DATA:
            return f"full data of {len(self.data)} octets"
        return None


def usable(records: list[TlsaRecord]) -> tuple[list[TlsaRecord], list[str]]:
    """Rule 1: (usable records, reasons for the skipped ones)."""
    good, skipped = [], []
    for r in records:
        why = r.problem()
        if why is None:
            good.append(r)
        else:
            skipped.append(f"{r.usage} {r.selector} {r.mtype}: {why}")
    return good, skipped


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == 0:
        return der
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def association(der: bytes, selector: int, mtype: int) -> bytes:
    """The TLSA data a certificate (DER) would have: for tests, and for ``pigeon dns``."""
    return _digest(_selected(x509.load_der_x509_certificate(der), der, selector), mtype)


def _matches(cert: x509.Certificate, der: bytes, r: TlsaRecord) -> bool:
    return _digest(_selected(cert, der, r.selector), r.mtype) == r.data


def match_chain(chain: list[bytes], records: list[TlsaRecord], names: tuple[str, ...],
                now: datetime.datetime) -> str | None:
    """Rules 3-4."""
    if not chain:
        return "the server sent no certificate"
    try:
        certs = [x509.load_der_x509_certificate(d) for d in chain]
    except ValueError as exc:
        return f"unparsable certificate in the chain: {exc}"
    leaf = certs[0]
    for r in records:
        if r.usage == DANE_EE and _matches(leaf, chain[0], r):
            return None
    ta_problems = []
    for r in records:
        if r.usage != DANE_TA:
            continue
        for i in range(1, len(certs)):
            if not _matches(certs[i], chain[i], r):
                continue
            why = _verify_to(certs[0], certs[1:i], certs[i], names, now)
            if why is None:
                return None
            ta_problems.append(why)
    if ta_problems:
        return "; ".join(ta_problems)
    return "no TLSA record matches the certificate chain"


def _verify_to(leaf: x509.Certificate, intermediates: list[x509.Certificate], anchor: x509.Certificate,
               names: tuple[str, ...], now: datetime.datetime) -> str | None:
    store = verification.Store([anchor])
    last = "no name to check"
    for name in names:
        try:
            verifier = verification.PolicyBuilder().store(store).time(now).build_server_verifier(
                x509.DNSName(name))
            verifier.verify(leaf, intermediates)
            return None
        except (verification.VerificationError, ValueError) as exc:
            last = f"DANE-TA chain to the matched anchor fails for {name}: {exc}"
    return last
