"""Stripe's events: subscriptions, renewal invoices, overage packs bought at checkout."""

from billing.models import WebhookEvent
from billing.services.webhooks.effects import (
    SubscriptionState,
    credit_purchase,
    renewal_apply,
    subscription_sync,
    timestamp,
)
from billing.services.webhooks.envelope import STRIPE_ENVELOPE
from billing.services.webhooks.outcome import Outcome, WebhookFailed
from billing.services.webhooks.processor import Processor
from billing.services.webhooks.signatures import STRIPE_SCHEME

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


def subscription_changed(event: WebhookEvent, actor: str) -> Outcome:
    sub = STRIPE.object(event)
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
        period_start=timestamp(start),
        period_end=timestamp(end),
    )
    if not state.external_id:
        raise WebhookFailed("subscription has no id")
    return subscription_sync(event, state, actor)


def invoice_paid(event: WebhookEvent, actor: str) -> Outcome:
    invoice = STRIPE.object(event)
    if invoice.get("billing_reason") != "subscription_cycle":
        return Outcome.ignored(f"invoice for {invoice.get('billing_reason')!r}, not a renewal")
    parent = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    external_id = invoice.get("subscription") or parent
    lines = (invoice.get("lines") or {}).get("data") or []
    period = (lines[0].get("period") if lines and isinstance(lines[0], dict) else None) or {}
    return renewal_apply(
        event, external_id, timestamp(period.get("start")), timestamp(period.get("end")), actor
    )


def checkout_completed(event: WebhookEvent, actor: str) -> Outcome:
    session = STRIPE.object(event)
    meta = session.get("metadata") or {}
    if session.get("mode") != "payment" or "metric" not in meta:
        return Outcome.ignored("checkout for something other than an overage pack")
    if session.get("payment_status") != "paid":
        return Outcome.ignored(f"checkout not paid ({session.get('payment_status')!r})")
    ref = f"stripe:{session.get('payment_intent') or session.get('id')}"
    return credit_purchase(event, meta, ref, actor)


STRIPE = Processor(
    name="stripe",
    secret_setting="STRIPE_WEBHOOK_SECRET",
    scheme=STRIPE_SCHEME,
    envelope=STRIPE_ENVELOPE,
    metadata_key="metadata",
    object_in_data=True,
    handlers={
        "customer.subscription.created": subscription_changed,
        "customer.subscription.updated": subscription_changed,
        "customer.subscription.deleted": subscription_changed,
        "invoice.paid": invoice_paid,
        "checkout.session.completed": checkout_completed,
    },
)
