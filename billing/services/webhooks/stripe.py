"""Stripe's events: subscriptions, renewal invoices, overage packs, their refunds and disputes.

Payload shapes follow Stripe's API reference for the versions before and after 2025-03-31 (basil):
the period moved from the subscription to its items, an invoice's subscription from ``subscription``
to ``parent.subscription_details.subscription``, a line's proration flag from ``proration`` (with
``type``) to ``parent.subscription_item_details.proration`` / ``parent.invoice_item_details.proration``.
"""

from billing.models import CreditDraw, WebhookEvent
from billing.services.webhooks.effects import (
    SubscriptionState,
    credit_purchase,
    credit_purchase_call,
    renewal_apply,
    subscription_sync,
    subscription_sync_call,
)
from billing.services.webhooks.envelope import STRIPE_ENVELOPE
from billing.services.webhooks.fields import Fields
from billing.services.webhooks.outcome import Outcome, WebhookFailed
from billing.services.webhooks.processor import Processor
from billing.services.webhooks.refunds import pack_give_back, pack_take_back
from billing.services.webhooks.signatures import STRIPE_SCHEME

STRIPE_STATUS = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "incomplete": "past_due",
    "paused": "canceled",  # not paid for while paused: no paid plan; a resume brings it back
    "canceled": "canceled",
    "incomplete_expired": "canceled",
}
# The API versions these handlers were written and tested for (older and basil shapes); events of
# other versions are still applied, and flagged in the admin for a person to check.
API_VERSIONS = ("2020-08-27", "2025-08-27")


def subscription_changed(event: WebhookEvent, actor: str) -> Outcome:
    return subscription_sync(event, _subscription_state(event), actor)


def _subscription_state(event: WebhookEvent) -> SubscriptionState:
    sub = STRIPE.fields(event)
    items = sub.obj("items").objects("data")
    if event.event_type == "customer.subscription.deleted":
        status = "canceled"
    else:
        status = STRIPE_STATUS.get(sub.text("status"))
        if status is None:
            raise WebhookFailed(f"unknown Stripe subscription status {sub.raw('status')!r}")
    price_ids = tuple(p for item in items if (p := item.obj("price").text("id", required=False)))
    # Before 2025-03-31 the period is the subscription's; since, each item carries its own.
    periodic = sub if sub.has("current_period_start") else _plan_item(items, price_ids)
    has_period = periodic is not None and periodic.has("current_period_start")
    return SubscriptionState(
        external_id=sub.text("id"),
        external_customer=sub.text("customer", required=False),
        customer_id=sub.obj("metadata").raw("customer_id"),
        price_ids=price_ids,
        status=status,
        period_start=periodic.unix_time("current_period_start") if has_period else None,
        period_end=periodic.unix_time("current_period_end") if has_period else None,
        creation=event.event_type == "customer.subscription.created",
        note=" Paused at Stripe: no paid plan while paused." if sub.raw("status") == "paused" else "",
    )


def _plan_item(items: list[Fields], price_ids: tuple[str, ...]) -> Fields | None:
    """The item whose period counts: the plan's (the first with a period if none is known yet).

    Items of one subscription usually share its billing period: then any of them says it, and the
    plans need not be read (a second statement per delivery, SPEC §11); the plan's item is looked up
    only when the items' periods differ.
    """
    from billing.models import Plan

    periodic = [item for item in items if item.has("current_period_start")]
    if len({(item.raw("current_period_start"), item.raw("current_period_end")) for item in periodic}) <= 1:
        return periodic[0] if periodic else None
    plan_prices = set(
        Plan.objects.filter(stripe_price_id__in=price_ids).values_list("stripe_price_id", flat=True)
    )
    for item in items:
        if item.obj("price").raw("id") in plan_prices and item.has("current_period_start"):
            return item
    return next((item for item in items if item.has("current_period_start")), None)


def _is_subscription_line(line: Fields) -> bool:
    """A line billing a subscription item for its period, not a proration or a one-off item."""
    parent = line.obj("parent")
    if parent.has("type"):  # 2025-03-31 and later
        details = parent.obj("subscription_item_details")
        return parent.raw("type") == "subscription_item_details" and details.flag("proration") is False
    return line.raw("type") != "invoiceitem" and line.flag("proration") is False


def invoice_paid(event: WebhookEvent, actor: str) -> Outcome:
    invoice = STRIPE.fields(event)
    reason = invoice.text("billing_reason", required=False)
    if reason != "subscription_cycle":
        return Outcome.ignored(f"invoice for {reason!r}, not a renewal")
    external_id = invoice.text("subscription", required=False) or invoice.obj("parent").obj(
        "subscription_details"
    ).text("subscription", required=False)
    if not external_id:
        raise WebhookFailed("data.object: a renewal invoice names no subscription")
    lines = [line for line in invoice.obj("lines").objects("data") if _is_subscription_line(line)]
    if not lines:
        raise WebhookFailed("data.object.lines.data: the renewal invoice has no subscription line")
    period = lines[0].obj("period", required=True)
    return renewal_apply(event, external_id, period.unix_time("start"), period.unix_time("end"), actor)


def checkout_paid(event: WebhookEvent, actor: str) -> Outcome:
    """checkout.session.completed, or async_payment_succeeded once a SEPA/ACH payment clears."""
    session = STRIPE.fields(event)
    meta = session.obj("metadata")
    if session.raw("mode") != "payment" or not meta.has("metric"):
        return Outcome.ignored("checkout for something other than an overage pack")
    if session.raw("payment_status") != "paid":
        # SEPA, ACH: checkout.session.async_payment_succeeded follows once the payment clears.
        return Outcome.ignored(f"checkout not paid ({session.raw('payment_status')!r})")
    return credit_purchase(event, meta, _checkout_ref(session), actor)


def _checkout_ref(session: Fields) -> str:
    return f"stripe:{session.text('payment_intent', required=False) or session.text('id')}"


def checkout_paid_call(event: WebhookEvent, actor: str) -> tuple[str, list] | None:
    """checkout_paid in one statement, for a paid pack (anything else takes the Python path)."""
    session = STRIPE.fields(event)
    meta = session.obj("metadata")
    if session.raw("mode") != "payment" or not meta.has("metric") or session.raw("payment_status") != "paid":
        return None
    return credit_purchase_call(meta, _checkout_ref(session), actor)


def charge_refunded(event: WebhookEvent, actor: str) -> Outcome:
    charge = STRIPE.fields(event)
    ref = charge.text("payment_intent", required=False) or charge.text("id")
    return pack_take_back(event, external_ref=f"stripe:{ref}", kind=CreditDraw.Kind.REFUND, actor=actor)


def dispute_created(event: WebhookEvent, actor: str) -> Outcome:
    dispute = STRIPE.fields(event)
    ref = dispute.text("payment_intent", required=False) or dispute.text("charge")
    dispute_id = dispute.text("id")

    def won_already(grant) -> str | None:
        """Stripe does not promise the order of events: a close in our favour delivered first (and
        applied: it found nothing taken) means this dispute takes nothing back."""
        closed = (
            WebhookEvent.objects.filter(
                customer_id=grant.customer_id,  # indexed; the won close was recorded with it
                processor="stripe",
                event_type="charge.dispute.closed",
                status=WebhookEvent.Status.PROCESSED,
                payload__data__object__id=dispute_id,
                payload__data__object__status="won",
            )
            .values_list("event_id", flat=True)
            .first()
        )
        if closed is None:
            return None
        return f"dispute {dispute_id} was already closed won ({closed}): nothing taken back"

    return pack_take_back(
        event,
        external_ref=f"stripe:{ref}",
        kind=CreditDraw.Kind.CHARGEBACK,
        actor=actor,
        settled=won_already,
    )


def dispute_closed(event: WebhookEvent, actor: str) -> Outcome:
    """charge.dispute.closed: won gives back what the chargeback took; lost keeps it taken."""
    dispute = STRIPE.fields(event)
    status = dispute.text("status")
    if status != "won":
        return Outcome.ignored(f"dispute closed {status!r}: what its chargeback took stays taken")
    ref = dispute.text("payment_intent", required=False) or dispute.text("charge")
    return pack_give_back(event, external_ref=f"stripe:{ref}", actor=actor)


def thin_event_refusal(payload: dict) -> str | None:
    """A thin event carries no data.object: this endpoint cannot apply it; say so (SPEC §5)."""
    data = payload.get("data")
    if isinstance(data, dict) and isinstance(data.get("object"), dict):
        return None
    if payload.get("object") == "v2.core.event" or "related_object" in payload:
        return (
            "thin event (no data.object): this endpoint takes snapshot events; "
            "send it snapshot events (a webhook endpoint with an API version), not an event destination's thin events"
        )
    return "missing 'data.object': a Stripe event carries the object it is about"


STRIPE = Processor(
    name="stripe",
    secret_setting="STRIPE_WEBHOOK_SECRET",
    scheme=STRIPE_SCHEME,
    envelope=STRIPE_ENVELOPE,
    metadata_key="metadata",
    object_in_data=True,
    api_versions=API_VERSIONS,
    refusal=thin_event_refusal,
    handlers={
        "customer.subscription.created": subscription_changed,
        "customer.subscription.updated": subscription_changed,
        "customer.subscription.deleted": subscription_changed,
        "customer.subscription.paused": subscription_changed,
        "customer.subscription.resumed": subscription_changed,
        "invoice.paid": invoice_paid,
        "checkout.session.completed": checkout_paid,
        "checkout.session.async_payment_succeeded": checkout_paid,
        "charge.refunded": charge_refunded,
        "charge.dispute.created": dispute_created,
        "charge.dispute.closed": dispute_closed,
    },
    one_statement={
        **dict.fromkeys(
            (
                "customer.subscription.created",
                "customer.subscription.updated",
                "customer.subscription.deleted",
                "customer.subscription.paused",
                "customer.subscription.resumed",
            ),
            lambda event, actor: subscription_sync_call(_subscription_state(event), actor),
        ),
        "checkout.session.completed": checkout_paid_call,
        "checkout.session.async_payment_succeeded": checkout_paid_call,
    },
)
