"""Per-user sending limits for submission: messages per hour, recipients per message.

A compromised account is the usual source of spam from a small mail server; these limits cap
the damage until the operator notices (the refusals are logged with the user).

Rules:
1. ``check_message(user)`` at MAIL FROM: when the user has committed ``messages_per_hour``
   messages in the last hour (a sliding window), the transaction is refused with ``450 4.7.1``
   (temporary: the client retries later, nothing is lost).
2. ``check_recipient(accepted)`` at each RCPT TO: past ``recipients_per_message`` recipients,
   ``450 4.7.1`` for that recipient (the client may send the rest in another transaction,
   RFC 5321 §4.5.3.1.10).
3. ``record_message(user)`` after the commit (only messages that were queued count).
4. A limit of 0 means unlimited.
5. Memory is bounded: per user at most ``messages_per_hour`` timestamps, and at most
   ``max_users`` users tracked (the least recently active is forgotten first, which can only
   make a limit more lenient for a user idle while ``max_users`` others send).
6. Time comes from the injected ``Clock``.

What can go wrong: ``SendingLimits.validate`` raises ValueError for negative limits.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass

from pigeon.core.clock import Clock
from pigeon.proto.smtp.reply import Reply

log = logging.getLogger(__name__)

C450_RATE_LIMITED = Reply(450, "4.7.1", "Sending rate limit reached, try again later")  # RFC 3463 §3.8
C450_TOO_MANY_RECIPIENTS = Reply(450, "4.7.1", "Too many recipients for one message, send the rest separately")

WINDOW_SECONDS = 3600.0  # "per hour"


@dataclass(frozen=True, slots=True)
class SendingLimits:
    """The proposed ``[submission]`` keys."""

    # A person rarely sends more than a few dozen messages an hour; 200 leaves room for
    # mailing-list owners and scripts, and caps a hijacked account at 4800 a day.
    messages_per_hour: int = 200
    # RFC 5321 §4.5.3.1.8 makes 100 the minimum a *receiving* server must accept; a submission
    # policy may be stricter, but 100 keeps every ordinary client working.
    recipients_per_message: int = 100
    # Users tracked at once; each holds at most messages_per_hour floats (~ 8 B each).
    max_users: int = 10_000

    def validate(self) -> None:
        if self.messages_per_hour < 0 or self.recipients_per_message < 0:
            raise ValueError("sending limits must be 0 (unlimited) or positive")
        if self.max_users < 1:
            raise ValueError("max_users must be at least 1")


class SendingRateLimiter:
    def __init__(self, limits: SendingLimits, clock: Clock) -> None:
        limits.validate()
        self.limits = limits
        self.clock = clock
        self._sent: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, user: str, now: float) -> deque[float] | None:
        times = self._sent.get(user)
        if times is None:
            return None
        while times and now - times[0] >= WINDOW_SECONDS:
            times.popleft()
        if not times:
            del self._sent[user]
            return None
        return times

    def check_message(self, user: str) -> Reply | None:
        """Rule 1: None when the user may start another message."""
        limit = self.limits.messages_per_hour
        if limit == 0:
            return None
        times = self._recent(user.lower(), self.clock.now())
        if times is not None and len(times) >= limit:
            log.warning("submission: %s reached %d messages per hour; refused for now", user, limit)
            return C450_RATE_LIMITED
        return None

    def check_recipient(self, accepted: int) -> Reply | None:
        """Rule 2: ``accepted`` is the number of recipients already accepted in this transaction."""
        limit = self.limits.recipients_per_message
        if limit and accepted >= limit:
            return C450_TOO_MANY_RECIPIENTS
        return None

    def record_message(self, user: str) -> None:
        """Rule 3: count a queued message."""
        limit = self.limits.messages_per_hour
        if limit == 0:
            return
        key = user.lower()
        now = self.clock.now()
        times = self._recent(key, now)
        if times is None:
            times = self._sent[key] = deque(maxlen=limit)
        times.append(now)
        self._sent.move_to_end(key)
        while len(self._sent) > self.limits.max_users:  # rule 5
            self._sent.popitem(last=False)

    def users_tracked(self) -> int:
        return len(self._sent)
