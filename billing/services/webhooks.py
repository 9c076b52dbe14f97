"""Stripe and Paddle webhooks (SPEC §5): verify, record once, apply, audit.

Verification works on the raw body: Stripe signs "t.body" (``Stripe-Signature: t=…,v1=…``), Paddle
signs "ts:body" (``Paddle-Signature: ts=…;h1=…``), both HMAC-SHA256, compared in constant time,
within a timestamp tolerance, accepting any of several signatures (the processor's rotation) and any
of several configured secrets (ours, comma-separated). A rejected request writes nothing but a log line.

Each (processor, event id) is processed once: the inbox row and the event's effect commit in one
transaction; a redelivery waits on the first delivery's row and then answers 200, changing nothing.
Events that cannot be applied (no such customer, a price that maps to no plan) are stored as failed,
with the error, and can be replayed from the admin once the cause is fixed; a redelivery retries them.
"""

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.models import AuditLog, CreditGrant, Plan, Subscription, WebhookEvent
from billing.services.audit import audit_record
from billing.services.credits import CreditGrantError, credit_grant
from billing.services.periods import period_renew
from billing.services.plans import plan_change_validate
from usage.models import Customer

log = logging.getLogger("billing.webhooks")

SIGNATURE_HEADERS = {"stripe": "HTTP_STRIPE_SIGNATURE", "paddle": "HTTP_PADDLE_SIGNATURE"}
STRIPE_STATUS = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "incomplete": "past_due",
    "paused": "past_due",
    "canceled": "canceled",
    "incomplete_expired": "canceled",
}
PADDLE_STATUS = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "paused": "past_due",
    "canceled": "canceled",
}


class WebhookRejected(Exception):
    """400: the request is not a genuine, well-formed event. Nothing is written."""


class WebhookFailed(Exception):
    """A genuine event that cannot be applied: stored as failed, with this message, for replay."""


# --- verification --------------------------------------------------------------------------------


def webhook_secrets(processor: str) -> list[str]:
    raw = settings.STRIPE_WEBHOOK_SECRET if processor == "stripe" else settings.PADDLE_WEBHOOK_SECRET
    return [s.strip() for s in (raw or "").split(",") if s.strip()]


def _header_pairs(header: str, separator: str) -> list[tuple[str, str]]:
    pairs = []
    for part in header.split(separator):
        key, eq, value = part.strip().partition("=")
        if not eq or not key or not value:
            raise WebhookRejected("malformed signature header")
        pairs.append((key, value))
    return pairs


def signature_verify(
    processor: str,
    body: bytes,
    header: str | None,
    secrets: list[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> None:
    """Raise WebhookRejected unless one signature in the header matches one secret, in time."""
    if not header:
        raise WebhookRejected(f"missing {processor.title()}-Signature header")
    if processor == "stripe":
        pairs, ts_key, sig_key, joiner = _header_pairs(header, ","), "t", "v1", b"."
    else:
        pairs, ts_key, sig_key, joiner = _header_pairs(header, ";"), "ts", "h1", b":"
    stamps = [v for k, v in pairs if k == ts_key]
    signatures = [v for k, v in pairs if k == sig_key]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        raise WebhookRejected("malformed signature header")
    stamp = stamps[0]
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > tolerance:
        raise WebhookRejected(f"timestamp outside the {tolerance} s tolerance")
    signed = stamp.encode() + joiner + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return
    raise WebhookRejected("no signature matches")


def signature_header(processor: str, body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header a processor would send (for tests, the demo and the benchmark)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    joiner = b"." if processor == "stripe" else b":"
    digest = hmac.new(secret.encode(), stamp.encode() + joiner + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}" if processor == "stripe" else f"ts={stamp};h1={digest}"


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    processor: str
    event_id: str
    event_type: str
    occurred_at: datetime | None
    payload: dict


def envelope_parse(processor: str, body: bytes) -> Envelope:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected("body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise WebhookRejected("body is not a JSON object")
    id_key, type_key = ("id", "type") if processor == "stripe" else ("event_id", "event_type")
    event_id, event_type = payload.get(id_key), payload.get(type_key)
    if not isinstance(event_id, str) or not event_id or len(event_id) > 200:
        raise WebhookRejected(f"missing or invalid {id_key!r}")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise WebhookRejected(f"missing or invalid {type_key!r}")
    if not isinstance(payload.get("data"), dict):
        raise WebhookRejected("missing 'data' object")
    occurred = (
        _stripe_time(payload.get("created"))
        if processor == "stripe"
        else _paddle_time(payload.get("occurred_at"))
    )
    return Envelope(processor, event_id, event_type, occurred, payload)


def _stripe_time(value) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return datetime.fromtimestamp(value, tz=UTC)


def _paddle_time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    return parsed if parsed and parsed.tzinfo else None


# --- ingestion -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingested:
    event: WebhookEvent
    duplicate: bool


def webhook_ingest(envelope: Envelope) -> Ingested:
    """Record and apply one verified event, once (see the module docstring)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhook_events (processor, event_id, event_type, occurred_at, received_at, status, "
                "customer_id, outcome, error, attempts, payload) "
                "VALUES (%s, %s, %s, %s, now(), 'failed', NULL, '', 'not processed yet', 1, %s) "
                "ON CONFLICT (processor, event_id) DO NOTHING RETURNING id, received_at",
                [
                    envelope.processor,
                    envelope.event_id,
                    envelope.event_type,
                    envelope.occurred_at,
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
                payload=envelope.payload,
            )
            event._state.adding = False
        else:
            # A redelivery: wait for the first delivery to commit, then look at what it did.
            event = WebhookEvent.objects.select_for_update().get(
                processor=envelope.processor, event_id=envelope.event_id
            )
            if event.status != WebhookEvent.Status.FAILED:
                return Ingested(event, duplicate=True)
            event.attempts += 1
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
    handler = HANDLERS.get((event.processor, event.event_type))
    try:
        with transaction.atomic():  # a savepoint: a failed effect leaves no partial change
            if handler is None:
                status, outcome, customer_id = WebhookEvent.Status.IGNORED, "event type not handled", None
            else:
                status, outcome, customer_id = handler(event, _actor(event, replayed_by))
        event.status, event.outcome, event.error, event.customer_id = status, outcome, "", customer_id
    except WebhookFailed as exc:
        event.status, event.error = WebhookEvent.Status.FAILED, str(exc)
        event.customer_id = event.customer_id or _named_customer(event)
        log.warning("%s event %s (%s) failed: %s", event.processor, event.event_id, event.event_type, exc)
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "outcome", "error", "customer_id", "attempts", "processed_at"])


def _named_customer(event):
    """The customer the event's metadata names, when there is one (so a failure shows on its page)."""
    try:
        obj = _obj(event)
    except WebhookFailed:
        return None
    meta = obj.get("metadata" if event.processor == "stripe" else "custom_data")
    ref = meta.get("customer_id") if isinstance(meta, dict) else None
    try:
        return Customer.objects.filter(pk=ref).values_list("pk", flat=True).first() if ref else None
    except (ValueError, TypeError, ValidationError):
        return None


def _actor(event, replayed_by):
    actor = f"{event.processor} webhook {event.event_id}"
    return f"{actor} (replayed by {replayed_by})" if replayed_by else actor


# --- effects -------------------------------------------------------------------------------------


def _customer(customer_id) -> Customer:
    try:
        return Customer.objects.get(pk=customer_id)
    except (Customer.DoesNotExist, ValueError, TypeError):
        raise WebhookFailed(
            f"customer id {customer_id!r} in the event's metadata names no customer"
        ) from None


def _plan_for_price(processor: str, price_id) -> Plan:
    field = "stripe_price_id" if processor == "stripe" else "paddle_price_id"
    plan = Plan.objects.filter(**{field: price_id}).first() if price_id else None
    if plan is None:
        raise WebhookFailed(
            f"{processor} price {price_id!r} maps to no plan (set it on the plan in the admin)"
        )
    return plan


def _ts(value) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    parsed = _paddle_time(value)
    if parsed is None:
        raise WebhookFailed(f"timestamp {value!r} is not a time")
    return parsed


@dataclass(frozen=True)
class SubscriptionState:
    external_id: str
    external_customer: str | None
    customer_id: str | None
    price_id: str | None
    status: str
    period_start: datetime
    period_end: datetime


def _subscription_sync(event: WebhookEvent, state: SubscriptionState, actor: str):
    """Create or update the subscription from the processor's state, never from an older event."""
    subscription = (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("plan", "customer")
        .filter(processor=event.processor, external_subscription_id=state.external_id)
        .first()
    )
    if (
        subscription
        and subscription.last_event_at
        and event.occurred_at
        and event.occurred_at < subscription.last_event_at
    ):
        return (
            WebhookEvent.Status.IGNORED,
            f"older than the last applied event ({subscription.last_event_at.isoformat()}): subscription unchanged",
            subscription.customer_id,
        )
    if state.status == "canceled" and subscription:
        plan = subscription.plan  # a cancellation keeps the plan it ends
    else:
        plan = _plan_for_price(event.processor, state.price_id)
    if state.period_end <= state.period_start:
        raise WebhookFailed("the subscription's period is empty")
    if subscription is None:
        customer = _customer(state.customer_id)
        before = None
        for old in (
            Subscription.objects.select_for_update().filter(customer=customer).exclude(status="canceled")
        ):
            was = old.status
            old.status = Subscription.Status.CANCELED
            old.save(update_fields=["status", "updated_at"])
            audit_record(
                actor=actor,
                action=AuditLog.Action.WEBHOOK_EFFECT,
                target_type="subscription",
                target_id=old.pk,
                customer_id=customer.pk,
                before={"status": was, "plan": old.plan.code},
                after={"status": "canceled"},
                reason=f"replaced by {event.processor} subscription {state.external_id}",
            )
        subscription = Subscription(
            customer=customer, processor=event.processor, external_subscription_id=state.external_id
        )
    else:
        customer = subscription.customer
        before = _subscription_snapshot(subscription)
    warning = ""
    if before is not None and plan != subscription.plan and plan.price < subscription.plan.price:
        validation = plan_change_validate(customer=customer, target=plan)
        if not validation.allowed:
            warning = " Warning: " + " ".join(validation.blocks)
    subscription.plan = plan
    subscription.status = state.status
    subscription.external_customer_id = state.external_customer
    subscription.current_period_start = state.period_start
    subscription.current_period_end = state.period_end
    subscription.last_event_at = event.occurred_at or timezone.now()
    subscription.save()
    after = _subscription_snapshot(subscription)
    if before == after:
        return WebhookEvent.Status.PROCESSED, "no change", customer.pk
    audit_record(
        actor=actor,
        action=AuditLog.Action.WEBHOOK_EFFECT,
        target_type="subscription",
        target_id=subscription.pk,
        customer_id=customer.pk,
        before=before,
        after=after,
        reason=f"{event.event_type} {event.event_id}",
    )
    rolled = ""
    if state.status != "canceled" and period_renew(
        customer_id=customer.pk, start=state.period_start, end=state.period_end, actor=actor
    ):
        rolled = " Opened the usage period from the processor's period."
    change = "created" if before is None else "updated"
    return (
        WebhookEvent.Status.PROCESSED,
        f"subscription {state.external_id} {change}: {plan.code}, {state.status}.{rolled}{warning}",
        customer.pk,
    )


def _subscription_snapshot(s: Subscription) -> dict:
    return {
        "plan": s.plan.code,
        "status": s.status,
        "period_start": s.current_period_start.isoformat(),
        "period_end": s.current_period_end.isoformat(),
    }


def _renewal(event: WebhookEvent, external_id, start, end, actor: str):
    subscription = (
        Subscription.objects.select_for_update()
        .filter(processor=event.processor, external_subscription_id=external_id)
        .first()
    )
    if subscription is None:
        raise WebhookFailed(f"renewal of unknown {event.processor} subscription {external_id!r}")
    if end <= start:
        raise WebhookFailed("the renewal's period is empty")
    before = _subscription_snapshot(subscription)
    if start > subscription.current_period_start:
        subscription.current_period_start, subscription.current_period_end = start, end
        if subscription.status == Subscription.Status.PAST_DUE:
            subscription.status = Subscription.Status.ACTIVE  # paid
        subscription.save()
    opened = period_renew(customer_id=subscription.customer_id, start=start, end=end, actor=actor)
    after = _subscription_snapshot(subscription)
    if not opened and before == after:
        return (
            WebhookEvent.Status.PROCESSED,
            "renewal already applied: usage period unchanged",
            subscription.customer_id,
        )
    audit_record(
        actor=actor,
        action=AuditLog.Action.WEBHOOK_EFFECT,
        target_type="subscription",
        target_id=subscription.pk,
        customer_id=subscription.customer_id,
        before=before,
        after=after,
        reason=f"renewal paid ({event.event_id})",
    )
    what = "opened the usage period" if opened else "usage period already open"
    return (
        WebhookEvent.Status.PROCESSED,
        f"renewal [{start.isoformat()}, {end.isoformat()}): {what}",
        subscription.customer_id,
    )


def _credit_purchase(event: WebhookEvent, meta: dict, external_ref: str, actor: str):
    customer = _customer(meta.get("customer_id"))
    if CreditGrant.objects.filter(external_ref=external_ref).exists():
        return WebhookEvent.Status.PROCESSED, f"credit for {external_ref} already granted", customer.pk
    try:
        grant = credit_grant(
            customer=customer,
            metric=meta.get("metric"),
            quantity=meta.get("quantity"),
            source=CreditGrant.Source.PURCHASE,
            actor=actor,
            reason=f"overage pack paid ({event.event_id})",
            external_ref=external_ref,
        )
    except CreditGrantError as exc:
        raise WebhookFailed(f"overage pack metadata: {exc}") from None
    return (
        WebhookEvent.Status.PROCESSED,
        f"granted {grant.granted.normalize():f} {grant.metric} credit",
        customer.pk,
    )


def _obj(event):
    obj = event.payload["data"].get("object") if event.processor == "stripe" else event.payload["data"]
    if not isinstance(obj, dict):
        raise WebhookFailed("event data has no object")
    return obj


def _stripe_subscription(event, actor):
    sub = _obj(event)
    items = (sub.get("items") or {}).get("data") or [{}]
    item = items[0] if isinstance(items[0], dict) else {}
    status = (
        "canceled"
        if event.event_type == "customer.subscription.deleted"
        else STRIPE_STATUS.get(sub.get("status"))
    )
    if status is None:
        raise WebhookFailed(f"unknown Stripe subscription status {sub.get('status')!r}")
    start = sub.get("current_period_start", item.get("current_period_start"))
    end = sub.get("current_period_end", item.get("current_period_end"))
    state = SubscriptionState(
        external_id=str(sub.get("id") or ""),
        external_customer=sub.get("customer"),
        customer_id=(sub.get("metadata") or {}).get("customer_id"),
        price_id=(item.get("price") or {}).get("id"),
        status=status,
        period_start=_ts(start),
        period_end=_ts(end),
    )
    if not state.external_id:
        raise WebhookFailed("subscription has no id")
    return _subscription_sync(event, state, actor)


def _stripe_invoice_paid(event, actor):
    invoice = _obj(event)
    if invoice.get("billing_reason") != "subscription_cycle":
        return (
            WebhookEvent.Status.IGNORED,
            f"invoice for {invoice.get('billing_reason')!r}, not a renewal",
            None,
        )
    parent = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    external_id = invoice.get("subscription") or parent
    lines = (invoice.get("lines") or {}).get("data") or []
    period = (lines[0].get("period") if lines and isinstance(lines[0], dict) else None) or {}
    return _renewal(event, external_id, _ts(period.get("start")), _ts(period.get("end")), actor)


def _stripe_checkout_completed(event, actor):
    session = _obj(event)
    meta = session.get("metadata") or {}
    if session.get("mode") != "payment" or "metric" not in meta:
        return WebhookEvent.Status.IGNORED, "checkout for something other than an overage pack", None
    if session.get("payment_status") != "paid":
        return WebhookEvent.Status.IGNORED, f"checkout not paid ({session.get('payment_status')!r})", None
    ref = f"stripe:{session.get('payment_intent') or session.get('id')}"
    return _credit_purchase(event, meta, ref, actor)


def _paddle_subscription(event, actor):
    sub = _obj(event)
    status = PADDLE_STATUS.get(sub.get("status"))
    if status is None:
        raise WebhookFailed(f"unknown Paddle subscription status {sub.get('status')!r}")
    items = sub.get("items") or [{}]
    period = sub.get("current_billing_period") or {}
    if status == "canceled" and not period:
        period = {"starts_at": sub.get("started_at"), "ends_at": sub.get("canceled_at")}
    state = SubscriptionState(
        external_id=str(sub.get("id") or ""),
        external_customer=sub.get("customer_id"),
        customer_id=(sub.get("custom_data") or {}).get("customer_id"),
        price_id=((items[0] if isinstance(items[0], dict) else {}).get("price") or {}).get("id"),
        status=status,
        period_start=_ts(period.get("starts_at")),
        period_end=_ts(period.get("ends_at")),
    )
    if not state.external_id:
        raise WebhookFailed("subscription has no id")
    return _subscription_sync(event, state, actor)


def _paddle_transaction_completed(event, actor):
    txn = _obj(event)
    meta = txn.get("custom_data") or {}
    if txn.get("subscription_id"):
        if txn.get("origin") != "subscription_recurring":
            return (
                WebhookEvent.Status.IGNORED,
                f"first payment of a subscription ({txn.get('origin')!r})",
                None,
            )
        period = txn.get("billing_period") or {}
        return _renewal(
            event, txn["subscription_id"], _ts(period.get("starts_at")), _ts(period.get("ends_at")), actor
        )
    if "metric" not in meta:
        return WebhookEvent.Status.IGNORED, "one-off purchase that is not an overage pack", None
    return _credit_purchase(event, meta, f"paddle:{txn.get('id')}", actor)


HANDLERS = {
    ("stripe", "customer.subscription.created"): _stripe_subscription,
    ("stripe", "customer.subscription.updated"): _stripe_subscription,
    ("stripe", "customer.subscription.deleted"): _stripe_subscription,
    ("stripe", "invoice.paid"): _stripe_invoice_paid,
    ("stripe", "checkout.session.completed"): _stripe_checkout_completed,
    ("paddle", "subscription.created"): _paddle_subscription,
    ("paddle", "subscription.updated"): _paddle_subscription,
    ("paddle", "subscription.canceled"): _paddle_subscription,
    ("paddle", "transaction.completed"): _paddle_transaction_completed,
}


def webhook_receive(processor: str, body: bytes, signature: str | None) -> Ingested:
    """Verify, parse and ingest one delivery; WebhookRejected (400) writes nothing."""
    secrets = webhook_secrets(processor)
    if not secrets:
        raise RuntimeError(f"{processor.upper()}_WEBHOOK_SECRET is not set")
    signature_verify(processor, body, signature, secrets, tolerance=settings.WEBHOOK_TOLERANCE_SECONDS)
    return webhook_ingest(envelope_parse(processor, body))
