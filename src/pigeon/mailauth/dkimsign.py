"""DKIM signatures (RFC 6376, RFC 8463) and ARC sealing (RFC 8617) of outgoing messages, by dkimpy.

The caller hands over the message exactly as it will be sent (after every header fix-up and any
8-bit → 7-bit conversion: ``delivery.relay_session`` signs the form it sends) and prepends the
header fields returned here.

Rules:
1. ``dkim_headers`` signs with every key given (Ed25519 first, then RSA: RFC 8463 §1 asks for
   both while receivers learn Ed25519), ``c=relaxed/relaxed``, ``d=`` the key's domain.
2. The fields signed are those of ``SIGNED_HEADERS`` the message has, each as many times as it
   occurs, and ``From`` once more than it occurs (oversigning, RFC 6376 §8.15: a second From
   added on the way breaks the signature).
3. ``arc_headers`` adds one ARC set (RFC 8617 §4.1: ARC-Authentication-Results,
   ARC-Message-Signature, ARC-Seal) with the domain's RSA key (RFC 8617 §4.1.3 names
   rsa-sha256; Ed25519 is not defined for ARC). The AAR copies the results of our own
   ``Authentication-Results`` field (authserv-id = our hostname) when the message has one;
   otherwise it says ``none`` (RFC 8601 §2.7.1: no method was applied).
4. A message dkimpy cannot parse, or a key it refuses, gives no header and a log line: the
   message then goes out unsigned rather than waiting (a signature is not worth holding mail).

What can go wrong: see rule 4. Signing holds the message in memory (dkimpy works on bytes);
``limits.max_message_size`` bounds it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import dkim

from pigeon.mailauth.keys import DkimKey

log = logging.getLogger(__name__)

# The fields issue 17 asks to cover (RFC 6376 §5.4.1's recommended set, trimmed to those that
# carry meaning for a reader).
SIGNED_HEADERS = (
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "MIME-Version",
    "Content-Type", "Content-Transfer-Encoding", "In-Reply-To", "References",
)
ARC_SIGNED_HEADERS = SIGNED_HEADERS  # the AMS covers the same fields (From once, as dkimpy wants)
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def field_names(message: bytes) -> list[str]:
    """The names of the header fields of ``message``, in order (lower-cased)."""
    head = message.split(b"\r\n\r\n", 1)[0]
    names = []
    for line in head.split(b"\r\n"):
        m = _FIELD.match(line)
        if m and line[:1] not in (b" ", b"\t"):
            names.append(m.group(1).decode("ascii").lower())
    return names


def header_list(message: bytes) -> list[bytes]:
    """Rule 2."""
    present = field_names(message)
    out: list[bytes] = []
    for name in SIGNED_HEADERS:
        count = present.count(name.lower())
        if name == "From":
            count += 1  # oversigned
        out.extend([name.encode("ascii")] * count)
    return out


def dkim_headers(message: bytes, keys: Sequence[DkimKey]) -> bytes:
    """Rule 1: the DKIM-Signature fields to prepend (CRLF-terminated), or b"" (rule 4)."""
    out = b""
    include = header_list(message)
    for key in keys:
        algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
        try:
            out += dkim.sign(message, key.selector.encode("ascii"), key.domain.encode("ascii"),
                             key.signing_key(), canonicalize=(b"relaxed", b"relaxed"),
                             signature_algorithm=algorithm, include_headers=include)
        except (dkim.DKIMException, ValueError) as exc:  # rule 4
            log.error("dkim: signing with %s/%s failed: %s; sending without it", key.domain, key.selector, exc)
    return out


def _our_results(message: bytes, authserv_id: str) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    pattern = re.compile(r"^authentication-results:\s*" + re.escape(authserv_id) + r"\s*;", re.I | re.M)
    return pattern.search(head) is not None


def arc_headers(message: bytes, key: DkimKey, authserv_id: str) -> bytes:
    """Rule 3: the ARC set to prepend (CRLF-terminated), or b"" (rule 4)."""
    if key.algorithm != "rsa":
        raise ValueError("ARC seals with an RSA key (RFC 8617 §4.1.3)")
    signed = message
    if not _our_results(message, authserv_id):
        # RFC 8601 §2.7.1 "none": nothing was checked. Only dkimpy sees this field; A-R is not
        # in the AMS's h= (RFC 8617 §4.1.2), so the sent message verifies without it.
        signed = f"Authentication-Results: {authserv_id}; none\r\n".encode("ascii") + message
    include = [h for h in header_list(message) if h != b"From"] + [b"From"]
    try:
        fields = dkim.arc_sign(signed, key.selector.encode("ascii"), key.domain.encode("ascii"),
                               key.signing_key(), authserv_id.encode("ascii"), include_headers=include)
    except (dkim.DKIMException, ValueError) as exc:  # rule 4
        log.error("arc: sealing with %s/%s failed: %s; forwarding without a seal", key.domain, key.selector, exc)
        return b""
    if not fields:
        log.error("arc: dkimpy made no ARC set (chain terminated); forwarding without a seal")
        return b""
    # dkimpy returns them seal first; each ends with the line end it was given.
    return b"".join(fields)
