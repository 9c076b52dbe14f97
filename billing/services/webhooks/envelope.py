"""The envelope every delivery shares: which event, of what type, when the processor created it."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils.dateparse import parse_datetime

from billing.services.webhooks.outcome import WebhookRejected


@dataclass(frozen=True)
class Envelope:
    processor: str
    event_id: str
    event_type: str
    occurred_at: datetime | None
    payload: dict


@dataclass(frozen=True)
class EnvelopeShape:
    """Where a processor puts the envelope's fields."""

    id_key: str
    type_key: str
    time_key: str
    parse_time: object  # Callable[[object], datetime | None]


def unix_time(value) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def iso_time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    return parsed if parsed and parsed.tzinfo else None


STRIPE_ENVELOPE = EnvelopeShape("id", "type", "created", unix_time)
PADDLE_ENVELOPE = EnvelopeShape("event_id", "event_type", "occurred_at", iso_time)


def envelope_read(processor: str, shape: EnvelopeShape, body: bytes) -> Envelope:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise WebhookRejected("body is not a JSON object")
    event_id, event_type = payload.get(shape.id_key), payload.get(shape.type_key)
    if not isinstance(event_id, str) or not event_id or len(event_id) > 200:
        raise WebhookRejected(f"missing or invalid {shape.id_key!r}")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise WebhookRejected(f"missing or invalid {shape.type_key!r}")
    if not isinstance(payload.get("data"), dict):
        raise WebhookRejected("missing 'data' object")
    occurred = shape.parse_time(payload.get(shape.time_key))
    return Envelope(processor, event_id, event_type, occurred, payload)
