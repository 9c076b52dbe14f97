"""The inbox (SPEC §5): verify, record once, apply, audit.

Each (processor, event id) is processed once: the inbox row and the event's effect commit in one
transaction; a redelivery waits on the first delivery's row and then answers 200, changing nothing.
Events that cannot be applied (no such customer, a price that maps to no plan) are stored as failed,
with the error, and can be replayed from the admin once the cause is fixed; a redelivery retries them.
A rejected request (bad signature, malformed body) writes nothing but a log line.
"""

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction

from billing.models import WebhookEvent
from billing.services.webhooks.envelope import Envelope
from billing.services.webhooks.outcome import Outcome, WebhookFailed, WebhookNotYet
from billing.services.webhooks.paddle import PADDLE
from billing.services.webhooks.processor import Processor
from billing.services.webhooks.stripe import STRIPE
from usage.horizon import PERIOD_OUTSIDE_HORIZON
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


_CLAIM = (
    "INSERT INTO webhook_events (processor, event_id, event_type, occurred_at, received_at, status, "
    "customer_id, outcome, error, attempts, retry_expected, api_version, payload) "
    "VALUES (%s, %s, %s, %s, now(), 'failed', NULL, '', 'not processed yet', 1, false, %s, %s) "
    "ON CONFLICT (processor, event_id) DO NOTHING RETURNING id, received_at"
)
_RECORD = (
    "UPDATE webhook_events SET status = %s, outcome = %s, error = %s, customer_id = %s, attempts = %s, "
    "retry_expected = %s, processed_at = now() WHERE id = %s RETURNING processed_at"
)


def webhook_ingest(envelope: Envelope) -> Ingested:
    """Record and apply one verified event, once (see the module docstring).

    The usual delivery costs one transaction: claim the inbox row (the unique key serializes parallel
    deliveries of one event), apply the effect, record the outcome. A failing effect rolls that whole
    transaction back and a second one stores the event failed: no savepoint on the usual path.
    """
    processor = PROCESSORS[envelope.processor]
    if processor.handlers.get(envelope.event_type) is None and not envelope.problem:
        stored = _store_ignored(envelope)  # one statement, no transaction around it
        if stored is not None:
            return stored
    elif envelope.event_type in processor.one_statement and not envelope.problem:
        applied = _one_statement(processor, envelope)
        if applied is not None:
            return applied
    try:
        with transaction.atomic():
            event, duplicate = _claim(envelope)
            if duplicate:
                return Ingested(event, duplicate=True)
            if envelope.problem:  # genuine, but not applicable as sent: kept failed, with why
                _failed(event, envelope.problem, retry=False)
                return Ingested(event, duplicate=False)
            _record(event, _apply(event))
        return Ingested(event, duplicate=False)
    except WebhookFailed as exc:
        with transaction.atomic():
            event, duplicate = _claim(envelope)
            if duplicate:  # a parallel delivery applied it meanwhile
                return Ingested(event, duplicate=True)
            _failed(event, str(exc), retry=isinstance(exc, WebhookNotYet))
        return Ingested(event, duplicate=False)


_IGNORED = (
    "INSERT INTO webhook_events (processor, event_id, event_type, occurred_at, received_at, processed_at, "
    "status, customer_id, outcome, error, attempts, retry_expected, api_version, payload) "
    "VALUES (%s, %s, %s, %s, now(), now(), 'ignored', NULL, %s, '', 1, false, %s, %s) "
    "ON CONFLICT (processor, event_id) DO NOTHING RETURNING id, received_at"
)
NOT_HANDLED = "event type not handled"


def _store_ignored(envelope: Envelope) -> Ingested | None:
    """An event type with no handler: its inbox row, final at once. None when the row exists already."""
    with connection.cursor() as cursor:
        cursor.execute(
            _IGNORED,
            [
                envelope.processor,
                envelope.event_id,
                envelope.event_type,
                envelope.occurred_at,
                NOT_HANDLED,
                envelope.api_version,
                json.dumps(envelope.payload),
            ],
        )
        inserted = cursor.fetchone()
    if inserted is None:
        return None  # a redelivery: the usual path finds what the first delivery did
    event = WebhookEvent(
        pk=inserted[0],
        processor=envelope.processor,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        occurred_at=envelope.occurred_at,
        received_at=inserted[1],
        processed_at=inserted[1],
        status=WebhookEvent.Status.IGNORED,
        outcome=NOT_HANDLED,
        attempts=1,
        api_version=envelope.api_version,
        payload=envelope.payload,
    )
    event._state.adding = False
    return Ingested(event, duplicate=False)


PYTHON_PATH = "WH001"  # the SQLSTATE by which a one-statement effect hands the event back, keeping nothing


def _one_statement(processor: Processor, envelope: Envelope) -> Ingested | None:
    """The usual delivery as one SQL function call: inbox row, effect, audit, outcome (SPEC §11).

    None when only the Python path below applies the event: the handler's reads found something
    unusual (they raise again there, with the error to store), or the function handed it back.
    """
    if not settings.WEBHOOK_ONE_STATEMENT:
        return None
    event = WebhookEvent(
        processor=envelope.processor,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        occurred_at=envelope.occurred_at,
        api_version=envelope.api_version,
        payload=envelope.payload,
    )
    try:
        call = processor.one_statement[envelope.event_type](event, _actor(event, None))
    except WebhookFailed:
        return None
    if call is None:
        return None
    function, arguments = call
    params = [
        envelope.processor,
        envelope.event_id,
        envelope.event_type,
        envelope.occurred_at,
        envelope.api_version,
        json.dumps(envelope.payload),
        *arguments,
    ]
    sql = f"SELECT * FROM {function}({', '.join(['%s'] * len(params))})"
    try:
        # Outside a transaction the statement is its own; inside one (tests, a caller's), a savepoint.
        with (
            transaction.atomic() if connection.in_atomic_block else nullcontext(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, params)
            row = cursor.fetchone()
    except DatabaseError as exc:
        # Handed back, or a period the database's clock puts beyond the horizon: the Python path
        # stores the event failed with the reason.
        if getattr(exc.__cause__, "sqlstate", None) in (PYTHON_PATH, PERIOD_OUTSIDE_HORIZON):
            return None
        raise
    duplicate, pk, status, outcome, error, customer_id, attempts, retry, received_at, processed_at = row
    event.pk, event.status, event.outcome, event.error = pk, status, outcome, error
    event.customer_id, event.attempts, event.retry_expected = customer_id, attempts, retry
    event.received_at, event.processed_at = received_at, processed_at
    event._state.adding = False
    return Ingested(event, duplicate=duplicate)


def _claim(envelope: Envelope) -> tuple[WebhookEvent, bool]:
    """The inbox row, inserted or locked; duplicate when an earlier delivery already applied it."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM,
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
        return event, False
    # A redelivery: wait for the first delivery to commit, then look at what it did.
    event = WebhookEvent.objects.select_for_update().get(
        processor=envelope.processor, event_id=envelope.event_id
    )
    if event.status != WebhookEvent.Status.FAILED:
        return event, True
    event.attempts += 1
    return event, False


def webhook_replay(event: WebhookEvent, *, actor: str) -> WebhookEvent:
    """Apply a failed event again (from the admin, once its cause is fixed)."""
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.select_for_update().get(pk=event.pk)
            if event.status != WebhookEvent.Status.FAILED:
                raise ValueError(f"event {event.event_id} is {event.status}; only failed events are replayed")
            event.attempts += 1
            _record(event, _apply(event, replayed_by=actor))
    except WebhookFailed as exc:
        with transaction.atomic():
            event = WebhookEvent.objects.select_for_update().get(pk=event.pk)
            event.attempts += 1
            _failed(event, str(exc), retry=isinstance(exc, WebhookNotYet))
    return event


def _apply(event: WebhookEvent, replayed_by: str | None = None) -> Outcome:
    """The event's effect, through its processor's handler; WebhookFailed when it cannot be applied."""
    processor = PROCESSORS[event.processor]
    if event.occurred_at is None:
        processor.envelope.occurred_at(event.payload)  # raises when present but wrong
    handler = processor.handlers.get(event.event_type)
    if handler is None:
        return Outcome.ignored(NOT_HANDLED)
    return handler(event, _actor(event, replayed_by))


def _record(event: WebhookEvent, outcome: Outcome) -> None:
    event.status, event.outcome, event.error = outcome.status, outcome.message, ""
    event.customer_id, event.retry_expected = outcome.customer_id, False
    _save(event)


def _failed(event: WebhookEvent, error: str, *, retry: bool) -> None:
    event.status, event.error, event.retry_expected = WebhookEvent.Status.FAILED, error, retry
    event.customer_id = event.customer_id or _named_customer(PROCESSORS[event.processor], event)
    log.warning("%s event %s (%s) failed: %s", event.processor, event.event_id, event.event_type, error)
    _save(event)


def _save(event: WebhookEvent) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _RECORD,
            [
                event.status,
                event.outcome,
                event.error,
                event.customer_id,
                event.attempts,
                event.retry_expected,
                event.pk,
            ],
        )
        event.processed_at = cursor.fetchone()[0]


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
