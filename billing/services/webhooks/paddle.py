"""Paddle Billing's notifications: subscriptions, and completed transactions (renewals, packs)."""

from billing.models import WebhookEvent
from billing.services.webhooks.effects import (
    SubscriptionState,
    credit_purchase,
    renewal_apply,
    subscription_sync,
)
from billing.services.webhooks.envelope import PADDLE_ENVELOPE
from billing.services.webhooks.fields import Fields
from billing.services.webhooks.outcome import Outcome, WebhookFailed
from billing.services.webhooks.processor import Processor
from billing.services.webhooks.signatures import PADDLE_SCHEME

PADDLE_STATUS = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "paused": "past_due",
    "canceled": "canceled",
}


def subscription_changed(event: WebhookEvent, actor: str) -> Outcome:
    sub = PADDLE.fields(event)
    status = PADDLE_STATUS.get(sub.text("status"))
    if status is None:
        raise WebhookFailed(f"unknown Paddle subscription status {sub.raw('status')!r}")
    items = sub.objects("items")
    item = items[0] if items else Fields({}, "data.items[0]")
    if sub.has("current_billing_period") or status != "canceled":
        period = sub.obj("current_billing_period", required=True)
        start, end = period.iso_time("starts_at"), period.iso_time("ends_at")
    else:
        start, end = sub.iso_time("started_at"), sub.iso_time("canceled_at")
    state = SubscriptionState(
        external_id=sub.text("id"),
        external_customer=sub.text("customer_id", required=False),
        customer_id=sub.obj("custom_data").raw("customer_id"),
        price_id=item.obj("price").text("id", required=False),
        status=status,
        period_start=start,
        period_end=end,
    )
    return subscription_sync(event, state, actor)


def transaction_completed(event: WebhookEvent, actor: str) -> Outcome:
    txn = PADDLE.fields(event)
    meta = txn.obj("custom_data")
    subscription_id = txn.text("subscription_id", required=False)
    if subscription_id:
        origin = txn.raw("origin")
        if origin != "subscription_recurring":
            return Outcome.ignored(f"first payment of a subscription ({origin!r})")
        period = txn.obj("billing_period", required=True)
        return renewal_apply(
            event, subscription_id, period.iso_time("starts_at"), period.iso_time("ends_at"), actor
        )
    if not meta.has("metric"):
        return Outcome.ignored("one-off purchase that is not an overage pack")
    return credit_purchase(event, meta, f"paddle:{txn.text('id')}", actor)


PADDLE = Processor(
    name="paddle",
    secret_setting="PADDLE_WEBHOOK_SECRET",
    scheme=PADDLE_SCHEME,
    envelope=PADDLE_ENVELOPE,
    metadata_key="custom_data",
    object_in_data=False,
    handlers={
        "subscription.created": subscription_changed,
        "subscription.updated": subscription_changed,
        "subscription.canceled": subscription_changed,
        "transaction.completed": transaction_completed,
    },
)
