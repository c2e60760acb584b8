"""The remote transport until DNS MX routing lands: keep the mail, defer it, lose nothing.

Recipients in other domains (alias targets, relay_domains) stay in the queue as ``deferred``
with ``451 4.4.0`` and are retried on the normal schedule; past the queue lifetime they bounce
like any other deferred recipient. ``pigeon queue list`` shows them.
"""

from __future__ import annotations

from pigeon.core.results import RecipientResult
from pigeon.delivery.base import DeliveryJob
from pigeon.proto.smtp.reply import Reply

C451_NO_RELAY = Reply(451, "4.4.0", "Remote delivery is not configured yet; message kept in the queue")


class HoldForRelay:
    async def deliver(self, job: DeliveryJob) -> list[RecipientResult]:
        return [RecipientResult(r, "deferred", C451_NO_RELAY, "none") for r in job.recipients]
