"""Bounces to SRS addresses: the recipient ``SRS0=…@<local domain>`` expands to the original sender.

Rules:
1. ``SrsExpander`` wraps the directory's expander (``intake.RecipientExpander``): an SRS address
   in a local domain that verifies (``mailauth.srs`` rule 4) expands to the address it encodes
   (the original sender, or the first forwarder's SRS0 address for SRS1), which the queue then
   relays; anything else goes to the directory as before.
2. The SMTP server has already refused an SRS address that does not verify (``550 5.7.1``,
   ``smtpd.session``); one that fails here anyway (it expired between RCPT and the end of DATA,
   or came through ``pigeon sendmail``) expands to nothing, with a log line: cleanup then fails
   that recipient (``550 5.4.6``) and the sender is told, never a crash.

What can go wrong: see rule 2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pigeon.cleanup.intake import RecipientExpander
from pigeon.core.address import Address
from pigeon.core.clock import Clock
from pigeon.mailauth.srs import Srs, SrsError, is_srs

log = logging.getLogger(__name__)


class SrsExpander:
    def __init__(self, inner: RecipientExpander, srs: Srs, is_local: Callable[[str], bool], clock: Clock) -> None:
        self.inner = inner
        self.srs = srs
        self.is_local = is_local
        self.clock = clock

    def expand(self, address: Address) -> list[Address]:
        if not (is_srs(address.local) and self.is_local(address.domain)):
            return self.inner.expand(address)
        try:
            target = self.srs.reverse(address, self.clock.now())
        except SrsError as exc:  # rule 2
            log.warning("srs: <%s> does not verify (%s); not delivered", address, exc)
            return []
        log.info("srs: <%s> decoded to <%s>", address, target)
        return [target]
