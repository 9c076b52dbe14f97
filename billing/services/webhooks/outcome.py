"""What handling one event came to, and the two ways it can go wrong."""

from dataclasses import dataclass
from uuid import UUID

from billing.models import WebhookEvent


class WebhookRejected(Exception):
    """400: the request is not a genuine, well-formed event. Nothing is written."""


class WebhookFailed(Exception):
    """A genuine event that cannot be applied: stored as failed, with this message, for replay.

    A permanent failure (a price no plan carries, a field of the wrong type) answers 200: the
    processor redelivering it cannot help, a person fixes the cause and replays it.
    """


class WebhookNotYet(WebhookFailed):
    """A failure because something the event needs is not there yet (its subscription, its customer).

    Answered non-2xx so the processor redelivers it; stored failed meanwhile, attempts counted.
    """


@dataclass(frozen=True)
class Outcome:
    """A handler's answer: the inbox row's status, what changed (or why nothing did), whose it was."""

    status: WebhookEvent.Status
    message: str
    customer_id: UUID | None = None

    @classmethod
    def processed(cls, message: str, customer_id: UUID | None = None) -> "Outcome":
        return cls(WebhookEvent.Status.PROCESSED, message, customer_id)

    @classmethod
    def ignored(cls, message: str, customer_id: UUID | None = None) -> "Outcome":
        return cls(WebhookEvent.Status.IGNORED, message, customer_id)
