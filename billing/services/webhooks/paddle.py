"""Paddle Billing's notifications: subscriptions, and completed transactions (renewals, packs)."""

from billing.models import WebhookEvent
from billing.services.webhooks.effects import (
    SubscriptionState,
    credit_purchase,
    renewal_apply,
    subscription_sync,
    timestamp,
)
from billing.services.webhooks.envelope import PADDLE_ENVELOPE
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
    sub = PADDLE.object(event)
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
        period_start=timestamp(period.get("starts_at")),
        period_end=timestamp(period.get("ends_at")),
    )
    if not state.external_id:
        raise WebhookFailed("subscription has no id")
    return subscription_sync(event, state, actor)


def transaction_completed(event: WebhookEvent, actor: str) -> Outcome:
    txn = PADDLE.object(event)
    meta = txn.get("custom_data") or {}
    if txn.get("subscription_id"):
        if txn.get("origin") != "subscription_recurring":
            return Outcome.ignored(f"first payment of a subscription ({txn.get('origin')!r})")
        period = txn.get("billing_period") or {}
        return renewal_apply(
            event,
            txn["subscription_id"],
            timestamp(period.get("starts_at")),
            timestamp(period.get("ends_at")),
            actor,
        )
    if "metric" not in meta:
        return Outcome.ignored("one-off purchase that is not an overage pack")
    return credit_purchase(event, meta, f"paddle:{txn.get('id')}", actor)


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
