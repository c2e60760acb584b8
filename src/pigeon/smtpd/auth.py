"""SMTP AUTH's words (RFC 4954) for the protocol-neutral outcomes of ``auth.sasl``.

Rules:
1. A challenge is ``334`` and the base64 text, without an enhanced code (RFC 2034 §3 applies to
   final replies only; RFC 4954 §4).
2. Success is ``235 2.7.0``. The failures (RFC 4954 §4, §6): unknown mechanism ``504 5.5.4``;
   encryption required ``538 5.7.11``; ``*`` from the client ``501 5.0.0``; a line that is not
   base64 ``501 5.5.2``; a malformed response ``501 5.5.2``; wrong credentials ``535 5.7.8``;
   directory unavailable ``454 4.7.0``; throttled ``421 4.7.0``, after which the session closes.
3. Every ``AuthFailure`` has a reply (``FAILURE_REPLIES`` is complete; a unit test holds it).
"""

from __future__ import annotations

from pigeon.auth.sasl import AuthFailure, Challenge
from pigeon.proto.smtp.reply import (
    C235_AUTH_OK,
    C421_AUTH_THROTTLED,
    C454_AUTH_TEMPORARY,
    C501_AUTH_BASE64,
    C501_AUTH_CANCELLED,
    C501_AUTH_MALFORMED,
    C504_AUTH_MECHANISM,
    C535_AUTH_FAILED,
    C538_ENCRYPTION_REQUIRED,
    Reply,
)

FAILURE_REPLIES: dict[AuthFailure, Reply] = {
    AuthFailure.MECHANISM: C504_AUTH_MECHANISM,
    AuthFailure.ENCRYPTION_REQUIRED: C538_ENCRYPTION_REQUIRED,
    AuthFailure.CANCELLED: C501_AUTH_CANCELLED,
    AuthFailure.BAD_BASE64: C501_AUTH_BASE64,
    AuthFailure.MALFORMED: C501_AUTH_MALFORMED,
    AuthFailure.BAD_CREDENTIALS: C535_AUTH_FAILED,
    AuthFailure.UNAVAILABLE: C454_AUTH_TEMPORARY,
    AuthFailure.THROTTLED: C421_AUTH_THROTTLED,
}

SUCCESS = C235_AUTH_OK


def challenge_reply(challenge: Challenge) -> Reply:
    """Rule 1."""
    return Reply(334, "", challenge.text)


def failure_reply(failure: AuthFailure) -> Reply:
    """Rule 2."""
    return FAILURE_REPLIES[failure]
