"""The inbox (SPEC §5): verify, record once, apply, audit.

Each (processor, event id) is processed once: the inbox row and the event's effect commit in one
transaction; a redelivery waits on the first delivery's row and then answers 200, changing nothing.
Events that cannot be applied (no such customer, a price that maps to no plan) are stored as failed,
with the error, and can be replayed from the admin once the cause is fixed; a redelivery retries them.
A rejected request (bad signature, malformed body) writes nothing but a log line.
"""

import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from billing.models import WebhookEvent
from billing.services.webhooks.envelope import Envelope
from billing.services.webhooks.outcome import Outcome, WebhookFailed, WebhookNotYet
from billing.services.webhooks.paddle import PADDLE
from billing.services.webhooks.processor import Processor
from billing.services.webhooks.stripe import STRIPE
from usage.models import Customer

log = logging.getLogger("billing.webhooks")

PROCESSORS: dict[str, Processor] = {p.name: p for p in (STRIPE, PADDLE)}


@dataclass(frozen=True)
class Ingested:
    event: WebhookEvent
    duplicate: bool

    @property
    def retry(self) -> bool:
        """Failed for something not there yet: answer non-2xx so the processor delivers it again."""
        return self.event.status == WebhookEvent.Status.FAILED and self.event.retry_expected


def webhook_ingest(envelope: Envelope) -> Ingested:
    """Record and apply one verified event, once (see the module docstring)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhook_events (processor, event_id, event_type, occurred_at, received_at, status, "
                "customer_id, outcome, error, attempts, retry_expected, api_version, payload) "
                "VALUES (%s, %s, %s, %s, now(), 'failed', NULL, '', 'not processed yet', 1, false, %s, %s) "
                "ON CONFLICT (processor, event_id) DO NOTHING RETURNING id, received_at",
                [
                    envelope.processor,
                    envelope.event_id,
                    envelope.event_type,
                    envelope.occurred_at,
                    envelope.api_version,
                    json.dumps(envelope.payload),
                ],
            )
            inserted = cursor.fetchone()
        if inserted:
            event = WebhookEvent(
                pk=inserted[0],
                processor=envelope.processor,
                event_id=envelope.event_id,
                event_type=envelope.event_type,
                occurred_at=envelope.occurred_at,
                received_at=inserted[1],
                status=WebhookEvent.Status.FAILED,
                attempts=1,
                api_version=envelope.api_version,
                payload=envelope.payload,
            )
            event._state.adding = False
            if envelope.problem:  # genuine, but not applicable as sent: kept failed, with why
                event.error = envelope.problem
                event.processed_at = timezone.now()
                event.save(update_fields=["error", "processed_at"])
                log.warning("%s event %s stored failed: %s", event.processor, event.event_id, event.error)
                return Ingested(event, duplicate=False)
        else:
            # A redelivery: wait for the first delivery to commit, then look at what it did.
            event = WebhookEvent.objects.select_for_update().get(
                processor=envelope.processor, event_id=envelope.event_id
            )
            if event.status != WebhookEvent.Status.FAILED:
                return Ingested(event, duplicate=True)
            event.attempts += 1
            if envelope.problem:  # still not applicable as sent; a person's replay may apply it
                event.save(update_fields=["attempts"])
                return Ingested(event, duplicate=False)
        _process(event)
    return Ingested(event, duplicate=False)


def webhook_replay(event: WebhookEvent, *, actor: str) -> WebhookEvent:
    """Apply a failed event again (from the admin, once its cause is fixed)."""
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().get(pk=event.pk)
        if event.status != WebhookEvent.Status.FAILED:
            raise ValueError(f"event {event.event_id} is {event.status}; only failed events are replayed")
        event.attempts += 1
        _process(event, replayed_by=actor)
    return event


def _process(event: WebhookEvent, replayed_by: str | None = None) -> None:
    processor = PROCESSORS[event.processor]
    handler = processor.handlers.get(event.event_type)
    try:
        with transaction.atomic():  # a savepoint: a failed effect leaves no partial change
            if event.occurred_at is None:
                processor.envelope.occurred_at(event.payload)  # raises when present but wrong
            if handler is None:
                outcome = Outcome.ignored("event type not handled")
            else:
                outcome = handler(event, _actor(event, replayed_by))
        event.status, event.outcome, event.error = outcome.status, outcome.message, ""
        event.customer_id, event.retry_expected = outcome.customer_id, False
    except WebhookFailed as exc:
        event.status, event.error = WebhookEvent.Status.FAILED, str(exc)
        event.retry_expected = isinstance(exc, WebhookNotYet)
        event.customer_id = event.customer_id or _named_customer(processor, event)
        log.warning("%s event %s (%s) failed: %s", event.processor, event.event_id, event.event_type, exc)
    event.processed_at = timezone.now()
    event.save(
        update_fields=[
            "status",
            "outcome",
            "error",
            "customer_id",
            "attempts",
            "retry_expected",
            "processed_at",
        ]
    )


def _named_customer(processor: Processor, event: WebhookEvent):
    """The customer the event's metadata names, when there is one (so a failure shows on its page)."""
    try:
        obj = processor.object(event)
    except WebhookFailed:
        return None
    meta = obj.get(processor.metadata_key)
    ref = meta.get("customer_id") if isinstance(meta, dict) else None
    try:
        return Customer.objects.filter(pk=ref).values_list("pk", flat=True).first() if ref else None
    except (ValueError, TypeError, ValidationError):
        return None


def _actor(event, replayed_by):
    actor = f"{event.processor} webhook {event.event_id}"
    return f"{actor} (replayed by {replayed_by})" if replayed_by else actor


def webhook_receive(processor: str, body: bytes, signature: str | None) -> Ingested:
    """Verify, parse and ingest one delivery; WebhookRejected (400) writes nothing."""
    p = PROCESSORS[processor]
    secrets = p.secrets()
    if not secrets:
        raise RuntimeError(f"{processor.upper()}_WEBHOOK_SECRET is not set")
    p.verify(body, signature, secrets, tolerance=settings.WEBHOOK_TOLERANCE_SECONDS)
    return webhook_ingest(p.parse(body))
