"""Stripe's events: subscriptions, renewal invoices, overage packs bought at checkout."""

from billing.models import WebhookEvent
from billing.services.webhooks.effects import (
    SubscriptionState,
    credit_purchase,
    renewal_apply,
    subscription_sync,
)
from billing.services.webhooks.envelope import STRIPE_ENVELOPE
from billing.services.webhooks.fields import Fields
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
    sub = STRIPE.fields(event)
    items = sub.obj("items").objects("data")
    item = items[0] if items else Fields({}, "data.object.items.data[0]")
    if event.event_type == "customer.subscription.deleted":
        status = "canceled"
    else:
        status = STRIPE_STATUS.get(sub.text("status"))
        if status is None:
            raise WebhookFailed(f"unknown Stripe subscription status {sub.raw('status')!r}")
    # Before 2025-03-31 the period is the subscription's; since, each item carries its own.
    periodic = sub if sub.has("current_period_start") else item
    state = SubscriptionState(
        external_id=sub.text("id"),
        external_customer=sub.text("customer", required=False),
        customer_id=sub.obj("metadata").raw("customer_id"),
        price_id=item.obj("price").text("id", required=False),
        status=status,
        period_start=periodic.unix_time("current_period_start"),
        period_end=periodic.unix_time("current_period_end"),
    )
    return subscription_sync(event, state, actor)


def invoice_paid(event: WebhookEvent, actor: str) -> Outcome:
    invoice = STRIPE.fields(event)
    reason = invoice.text("billing_reason", required=False)
    if reason != "subscription_cycle":
        return Outcome.ignored(f"invoice for {reason!r}, not a renewal")
    external_id = invoice.text("subscription", required=False) or invoice.obj("parent").obj(
        "subscription_details"
    ).text("subscription", required=False)
    lines = invoice.obj("lines").objects("data")
    if not lines:
        raise WebhookFailed("data.object.lines.data: the invoice has no lines")
    period = lines[0].obj("period", required=True)
    return renewal_apply(event, external_id, period.unix_time("start"), period.unix_time("end"), actor)


def checkout_completed(event: WebhookEvent, actor: str) -> Outcome:
    session = STRIPE.fields(event)
    meta = session.obj("metadata")
    if session.raw("mode") != "payment" or not meta.has("metric"):
        return Outcome.ignored("checkout for something other than an overage pack")
    if session.raw("payment_status") != "paid":
        return Outcome.ignored(f"checkout not paid ({session.raw('payment_status')!r})")
    ref = session.text("payment_intent", required=False) or session.text("id")
    return credit_purchase(event, meta, f"stripe:{ref}", actor)


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
