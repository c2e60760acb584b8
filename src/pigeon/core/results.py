"""Per-recipient delivery results, and the error tree of the service layers.

Rules:
1. A delivery agent returns one ``RecipientResult`` per recipient it was given.
2. ``status`` is ``delivered`` (done), ``failed`` (permanent: bounce) or ``deferred`` (try again).
   An exception that escapes a delivery agent is a ``deferred`` with ``451 4.3.0``: never lost mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pigeon.core.address import Address
from pigeon.core.reply import Reply

Status = Literal["delivered", "failed", "deferred"]


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: Address
    status: Status
    reply: Reply
    host: str = ""  # where it was delivered or tried ("local", "mx.example.net[192.0.2.1]:25")

    @property
    def final(self) -> bool:
        return self.status != "deferred"


class MailError(Exception):
    """Base of Pigeon's service-layer errors; ``reply`` is what the wire should say."""

    def __init__(self, reply: Reply, message: str = "") -> None:
        super().__init__(message or str(reply))
        self.reply = reply


class TemporaryError(MailError):
    pass


class PermanentError(MailError):
    pass
