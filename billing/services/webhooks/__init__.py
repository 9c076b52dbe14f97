"""Stripe and Paddle webhooks (SPEC §5), one module per part:

- ``signatures``: the HMAC schemes (Stripe "t.body", Paddle "ts:body"), tolerance, rotation;
- ``envelope``: the fields every delivery carries (event id, type, time);
- ``processor``: a ``Processor`` bundles one processor's scheme, envelope and handlers;
- ``stripe`` / ``paddle``: each processor's handlers, reading its objects into shared shapes;
- ``fields``: typed reads of the processor's objects (no 500 from outside input);
- ``effects``: what the handlers do to billing (subscriptions, renewals, packs), returning an ``Outcome``;
- ``refunds``: a refunded or disputed pack's credit taken back, as a ledger entry;
- ``inbox``: verify, record once, apply, replay.
"""

from billing.services.webhooks.envelope import MAX_BODY_BYTES, Envelope
from billing.services.webhooks.inbox import (
    PROCESSORS,
    Ingested,
    webhook_ingest,
    webhook_receive,
    webhook_replay,
)
from billing.services.webhooks.outcome import Outcome, WebhookFailed, WebhookNotYet, WebhookRejected

SIGNATURE_HEADERS = {name: p.scheme.meta_key for name, p in PROCESSORS.items()}


def webhook_secrets(processor: str) -> list[str]:
    return PROCESSORS[processor].secrets()


def signature_verify(processor: str, body: bytes, header: str | None, secrets: list[str], **kwargs) -> None:
    """Raise WebhookRejected unless the header signs the body with one of the secrets, in time."""
    PROCESSORS[processor].verify(body, header, secrets, **kwargs)


def signature_header(processor: str, body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header a processor would send (for tests, the demo and the benchmark)."""
    return PROCESSORS[processor].sign(body, secret, timestamp)


def envelope_parse(processor: str, body: bytes) -> Envelope:
    return PROCESSORS[processor].parse(body)


__all__ = [
    "MAX_BODY_BYTES",
    "PROCESSORS",
    "SIGNATURE_HEADERS",
    "Envelope",
    "Ingested",
    "Outcome",
    "WebhookFailed",
    "WebhookNotYet",
    "WebhookRejected",
    "envelope_parse",
    "signature_header",
    "signature_verify",
    "webhook_ingest",
    "webhook_receive",
    "webhook_replay",
    "webhook_secrets",
]
