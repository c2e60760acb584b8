"""The MTA-STS policy this server publishes for its local domains (RFC 8461).

Rules:
1. The policy file (RFC 8461 §3.2) is ``version: STSv1``, ``mode``, one ``mx`` line per
   pattern, ``max_age``, each line ended by CRLF (the section's ABNF: ``sts-policy-term-sep``).
2. The MX patterns come from ``[mta_sts] mx``, the hostname by default (the config loader
   fills it): they must match the MX records the domain publishes, or senders in ``enforce``
   mode refuse to deliver (§4.1).
3. The policy is also announced by a TXT record ``_mta-sts.<domain>`` (``v=STSv1; id=...``,
   §3.1) that the operator publishes; ``policy_id`` gives an id that changes with the policy.
   ``pigeon dns`` prints that record from the same text (``mailauth.dnsrecords``), so the id
   it prints is always the id of the policy served here.
"""

from __future__ import annotations

from pigeon.config.model import MtaStsConfig
from pigeon.mailauth import dnsrecords


def policy_text(settings: MtaStsConfig) -> str:
    """Rule 1: the text served, built by the one function ``pigeon dns`` uses too."""
    return dnsrecords.mta_sts_policy(settings.mode, settings.mx, settings.max_age)


def policy_id(settings: MtaStsConfig) -> str:
    """Rule 3: changes whenever the policy text does (``dnsrecords.policy_id`` of that text)."""
    return dnsrecords.policy_id(policy_text(settings))
