"""Paddle Billing's notifications: subscriptions, completed transactions (renewals, packs), adjustments.

Payload shapes follow Paddle's webhook reference: ``subscription.*`` carry the whole subscription
entity (``current_billing_period`` is null once paused or canceled), ``transaction.completed`` the
transaction with its ``origin`` (``subscription_recurring`` for a renewal, ``subscription_charge``
for a one-off charge on a subscription), ``adjustment.*`` a refund or chargeback of a transaction.
"""

from billing.models import CreditDraw, Subscription, WebhookEvent
from billing.services.webhooks.effects import (
    SubscriptionState,
    credit_purchase,
    credit_purchase_call,
    renewal_apply,
    subscription_sync,
    subscription_sync_call,
)
from billing.services.webhooks.envelope import PADDLE_ENVELOPE
from billing.services.webhooks.fields import Fields
from billing.services.webhooks.outcome import Outcome, WebhookFailed, WebhookNotYet
from billing.services.webhooks.processor import Processor
from billing.services.webhooks.refunds import pack_take_back
from billing.services.webhooks.signatures import PADDLE_SCHEME

PADDLE_STATUS = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "paused": "canceled",  # not paid for while paused: no paid plan; subscription.resumed brings it back
    "canceled": "canceled",
}
TAKE_BACK_ACTIONS = {"refund": CreditDraw.Kind.REFUND, "chargeback": CreditDraw.Kind.CHARGEBACK}


def subscription_changed(event: WebhookEvent, actor: str) -> Outcome:
    return subscription_sync(event, _subscription_state(event), actor)


def _subscription_state(event: WebhookEvent) -> SubscriptionState:
    sub = PADDLE.fields(event)
    paddle_status = sub.text("status")
    status = PADDLE_STATUS.get(paddle_status)
    if status is None:
        raise WebhookFailed(f"unknown Paddle subscription status {sub.raw('status')!r}")
    price_ids = tuple(
        p for item in sub.objects("items") if (p := item.obj("price").text("id", required=False))
    )
    period = sub.obj("current_billing_period")  # null when paused or canceled: the period is kept
    has_period = period.has("starts_at") or period.has("ends_at")
    return SubscriptionState(
        external_id=sub.text("id"),
        external_customer=sub.text("customer_id", required=False),
        customer_id=sub.obj("custom_data").raw("customer_id"),
        price_ids=price_ids,
        status=status,
        period_start=period.iso_time("starts_at") if has_period else None,
        period_end=period.iso_time("ends_at") if has_period else None,
        creation=event.event_type == "subscription.created",
        note=" Paused at Paddle: no paid plan while paused." if paddle_status == "paused" else "",
    )


def transaction_completed(event: WebhookEvent, actor: str) -> Outcome:
    txn = PADDLE.fields(event)
    meta = txn.obj("custom_data")
    subscription_id = txn.text("subscription_id", required=False)
    origin = txn.raw("origin")
    if subscription_id and origin == "subscription_recurring":
        period = txn.obj("billing_period", required=True)
        return renewal_apply(
            event, subscription_id, period.iso_time("starts_at"), period.iso_time("ends_at"), actor
        )
    if subscription_id and origin != "subscription_charge":
        return Outcome.ignored(f"payment of a subscription change ({origin!r}), not a renewal or a pack")
    if not meta.has("metric"):
        return Outcome.ignored("one-off purchase that is not an overage pack")
    if subscription_id and not meta.has("customer_id"):
        # A one-off charge on a subscription: the customer is the subscription's.
        meta = Fields({**meta.data, "customer_id": _subscription_customer(subscription_id)}, meta.path)
    return credit_purchase(event, meta, f"paddle:{txn.text('id')}", actor)


def transaction_completed_call(event: WebhookEvent, actor: str) -> tuple[str, list] | None:
    """transaction_completed in one statement, for a pack bought on its own (not on a subscription)."""
    txn = PADDLE.fields(event)
    meta = txn.obj("custom_data")
    if txn.text("subscription_id", required=False) or not meta.has("metric"):
        return None
    return credit_purchase_call(meta, f"paddle:{txn.text('id')}", actor)


def _subscription_customer(external_id: str) -> str:
    customer_id = (
        Subscription.objects.filter(processor="paddle", external_subscription_id=external_id)
        .values_list("customer_id", flat=True)
        .first()
    )
    if customer_id is None:
        raise WebhookNotYet(f"one-off charge on unknown paddle subscription {external_id!r}")
    return str(customer_id)


def adjustment(event: WebhookEvent, actor: str) -> Outcome:
    """adjustment.created / .updated: a refund or chargeback takes a pack back once approved."""
    adj = PADDLE.fields(event)
    action = adj.text("action")
    kind = TAKE_BACK_ACTIONS.get(action)
    if kind is None:
        return Outcome.ignored(f"adjustment {action!r}: takes nothing back")
    status = adj.text("status")
    if status != "approved":
        return Outcome.ignored(f"{action} {status!r}: taken back once approved (adjustment.updated)")
    return pack_take_back(event, external_ref=f"paddle:{adj.text('transaction_id')}", kind=kind, actor=actor)


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
        "subscription.paused": subscription_changed,
        "subscription.resumed": subscription_changed,
        "subscription.activated": subscription_changed,
        "subscription.past_due": subscription_changed,
        "transaction.completed": transaction_completed,
        "adjustment.created": adjustment,
        "adjustment.updated": adjustment,
    },
    one_statement={
        **dict.fromkeys(
            (
                "subscription.created",
                "subscription.updated",
                "subscription.canceled",
                "subscription.paused",
                "subscription.resumed",
                "subscription.activated",
                "subscription.past_due",
            ),
            lambda event, actor: subscription_sync_call(_subscription_state(event), actor),
        ),
        "transaction.completed": transaction_completed_call,
    },
)
