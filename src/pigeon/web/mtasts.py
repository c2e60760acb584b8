"""The MTA-STS policy this server publishes for its local domains (RFC 8461).

Rules:
1. The policy file (RFC 8461 §3.2) is ``version: STSv1``, ``mode``, one ``mx`` line per
   pattern, ``max_age``, each line ended by CRLF (the section's ABNF: ``sts-policy-term-sep``).
2. The MX patterns come from ``[mta_sts] mx``, the hostname by default (the config loader
   fills it): they must match the MX records the domain publishes, or senders in ``enforce``
   mode refuse to deliver (§4.1).
3. The policy is also announced by a TXT record ``_mta-sts.<domain>`` (``v=STSv1; id=...``,
   §3.1) that the operator publishes; ``policy_id`` gives an id that changes with the policy.
"""

from __future__ import annotations

import hashlib

from pigeon.config.model import MtaStsConfig

# RFC 8461 §3.1: the id is 1-32 alphanumeric characters.
POLICY_ID_LENGTH = 20


def policy_text(settings: MtaStsConfig) -> str:
    lines = ["version: STSv1", f"mode: {settings.mode}"]
    lines.extend(f"mx: {mx}" for mx in settings.mx)
    lines.append(f"max_age: {settings.max_age}")
    return "".join(f"{line}\r\n" for line in lines)


def policy_id(settings: MtaStsConfig) -> str:
    """Rule 3: changes whenever the policy text does."""
    return hashlib.sha256(policy_text(settings).encode()).hexdigest()[:POLICY_ID_LENGTH]
