"""Rules for authenticated senders (submission, RFC 6409), used by ``smtpd.session``.

Rules:
1. On the submission services (587 STARTTLS, 465 implicit TLS) MAIL needs authentication:
   ``530 5.7.0`` otherwise (RFC 4954 §6, RFC 6409 §4.3).
2. An authenticated user (on any service) may send to any domain (relay), and is held to their
   identity: the MAIL FROM address and every ``From:``/``Sender:`` address must be theirs
   (``pigeon.submission.sender``), else ``553 5.7.1``.
3. Per-user sending limits (``pigeon.submission.ratelimit``): messages per hour checked at MAIL,
   recipients per message at RCPT, both ``450 4.7.1``; a message counts once it is queued.
4. Submitted mail gets ``Message-ID:`` and ``Date:`` when missing (RFC 6409 §8.3, §8.2),
   done by cleanup (``Intake.begin(add_missing_headers=True)``).

What can go wrong: a directory error while checking the sender propagates (the session answers
``451 4.3.0``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pigeon.core.address import Address
from pigeon.directory import Directory
from pigeon.submission.ratelimit import SendingRateLimiter
from pigeon.submission.sender import DirectorySenders, FromCollector, check_mail_from
from pigeon.proto.smtp.reply import C530_AUTH_REQUIRED, Reply


@dataclass
class SenderPolicy:
    """Shared by every session of the server (built once by the app)."""

    directory: Directory
    limiter: SendingRateLimiter
    delimiters: Callable[[], str]

    def mail_from(self, user: str | None, sender: Address | None, required: bool) -> Reply | None:
        """Rules 1-3 at MAIL: None when the transaction may start."""
        if user is None:
            return C530_AUTH_REQUIRED if required else None
        refusal = check_mail_from(user, sender, DirectorySenders(self.directory), self.delimiters())
        if refusal is not None:
            return refusal
        return self.limiter.check_message(user)

    def rcpt(self, user: str | None, accepted: int) -> Reply | None:
        return None if user is None else self.limiter.check_recipient(accepted)

    def check_headers(self, user: str | None, collector: FromCollector | None) -> Reply | None:
        """Rule 2 on the header fields, at the end of DATA/BDAT."""
        if user is None or collector is None:
            return None
        collector.finish()
        return collector.check(user, DirectorySenders(self.directory), self.delimiters())

    def queued(self, user: str | None) -> None:
        if user is not None:
            self.limiter.record_message(user)
