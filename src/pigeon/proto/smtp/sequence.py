"""The server's sequence table: which command is allowed in which phase (RFC 5321 §4.1.4).

Rules:
1. The table is keyed by (phase, verb); a missing entry is ``503 5.5.1`` "Bad sequence of
   commands", or the more precise reply in ``SEQUENCE_REPLIES``.
2. RSET, NOOP, QUIT, HELP, VRFY, EXPN, HELO and EHLO are allowed in every phase.
3. Beyond the table: after a 554 greeting only QUIT is allowed (RFC 5321 §3.1); a verb of an
   extension not offered is ``502 5.5.1``; STARTTLS inside TLS is 503 (RFC 3207 §4.2); AUTH needs
   EHLO and is refused once authenticated (RFC 4954 §4); DATA after BODY=BINARYMIME is 503
   (RFC 3030 §3).

What can go wrong: nothing raises; ``refusal`` returns the reply or None.
"""

from __future__ import annotations

import enum
from typing import Final

from pigeon.proto.smtp.reply import (
    C502_NOT_IMPLEMENTED,
    C503_AUTH_ALREADY,
    C503_BAD_SEQUENCE,
    C503_BINARYMIME_NEEDS_BDAT,
    C503_TLS_ALREADY,
    C554_NO_VALID_RECIPIENTS,
    Reply,
)

class Phase(enum.Enum):
    """Where the session stands, for the sequence table."""

    INIT = "init"  # no HELO/EHLO yet
    READY = "ready"  # greeted, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    BDAT = "bdat"  # BDAT chunks under way


VERB_EXTENSION: Final = {"BDAT": "CHUNKING", "STARTTLS": "STARTTLS", "AUTH": "AUTH"}

_ANYTIME = ("HELO", "EHLO", "RSET", "NOOP", "QUIT", "HELP", "VRFY", "EXPN")
#: RFC 5321 §4.1.4 and RFC 3030/3207/4954: (phase, verb) → allowed; a missing entry is 503.
SEQUENCE: Final[frozenset[tuple[Phase, str]]] = frozenset(
    {(p, v) for p in Phase for v in _ANYTIME}
    | {
        (Phase.INIT, "STARTTLS"),
        (Phase.READY, "STARTTLS"),
        (Phase.READY, "AUTH"),
        (Phase.READY, "MAIL"),
        (Phase.MAIL, "RCPT"),
        (Phase.RCPT, "RCPT"),
        (Phase.RCPT, "DATA"),
        (Phase.RCPT, "BDAT"),
        (Phase.BDAT, "BDAT"),
    }
)
#: A more precise reply than 503 for some missing entries.
SEQUENCE_REPLIES: Final[dict[tuple[Phase, str], Reply]] = {
    (Phase.MAIL, "DATA"): C554_NO_VALID_RECIPIENTS,  # RFC 5321 §4.1.1.4
    (Phase.MAIL, "BDAT"): C554_NO_VALID_RECIPIENTS,
}


def refusal(
    phase: Phase,
    verb: str,
    *,
    refused: bool,
    offered: frozenset[str],
    tls_active: bool,
    esmtp: bool,
    authenticated: bool,
    binarymime: bool,
) -> Reply | None:
    """The reply refusing ``verb`` now, or None when it may proceed."""
    if refused and verb != "QUIT":
        return C503_BAD_SEQUENCE  # RFC 5321 §3.1
    ext = VERB_EXTENSION.get(verb)
    if ext is not None and ext not in offered:
        return C502_NOT_IMPLEMENTED
    if (phase, verb) not in SEQUENCE:
        return SEQUENCE_REPLIES.get((phase, verb), C503_BAD_SEQUENCE)
    if verb == "STARTTLS" and tls_active:
        return C503_TLS_ALREADY  # RFC 3207 §4.2
    if verb == "AUTH":
        if not esmtp:
            return C503_BAD_SEQUENCE  # RFC 4954 §4: AUTH needs EHLO
        if authenticated:
            return C503_AUTH_ALREADY  # RFC 4954 §4
    if verb == "DATA" and binarymime:
        return C503_BINARYMIME_NEEDS_BDAT  # RFC 3030 §3
    return None
