"""Effects both processors share: subscriptions kept in step, renewals, paid overage packs.

Handlers (stripe.py, paddle.py) read the processor's object into these shapes; the functions here
write through the services and return an Outcome, or raise WebhookFailed to store the event failed.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.utils import timezone

from billing.models import AuditLog, CreditGrant, Plan, Subscription, WebhookEvent
from billing.services.audit import audit_record
from billing.services.credits import BAD_QUANTITY, CreditGrantError, credit_grant, credit_grant_quantity
from billing.services.periods import PeriodOutsideHorizon, period_renew
from billing.services.plans import plan_change_validate
from billing.services.webhooks.fields import Fields
from billing.services.webhooks.outcome import Outcome, WebhookFailed, WebhookNotYet
from usage.models import Customer

MAX_PACK_QUANTITY = 10**12  # a pack is far smaller; the column holds 10**15


def _customer_pk(customer_id) -> UUID | None:
    """The UUID our metadata carries, or None when it is not one."""
    try:
        return UUID(customer_id) if isinstance(customer_id, str) and len(customer_id) <= 36 else None
    except ValueError:
        return None


def customer_get(customer_id) -> Customer:
    """Our customer named in the event's metadata (a UUID string, as we put it there)."""
    pk = _customer_pk(customer_id)
    if pk is None:
        shown = (
            repr(customer_id)[:60]
            if isinstance(customer_id, str)
            else f"of type {type(customer_id).__name__}"
        )
        raise WebhookFailed(f"customer id {shown} in the event's metadata is not a customer id (a UUID)")
    customer = Customer.objects.filter(pk=pk).first()
    if customer is None:
        raise WebhookNotYet(f"customer id {customer_id!r} in the event's metadata names no customer (yet)")
    return customer


def plan_for_prices(processor: str, price_ids: tuple[str, ...]) -> Plan:
    """The plan of the first item whose price a plan carries (add-ons and metered prices carry none)."""
    field = f"{processor}_price_id"  # Plan.stripe_price_id, Plan.paddle_price_id
    plans = (
        {getattr(p, field): p for p in Plan.objects.filter(**{f"{field}__in": price_ids})}
        if price_ids
        else {}
    )
    for price_id in price_ids:
        if price_id in plans:
            return plans[price_id]
    if len(price_ids) <= 1:
        shown = repr(price_ids[0]) if price_ids else "None"
        raise WebhookFailed(f"{processor} price {shown} maps to no plan (set it on the plan in the admin)")
    shown = ", ".join(repr(p) for p in price_ids)
    raise WebhookFailed(f"{processor} prices {shown}: none maps to a plan (set it on the plan in the admin)")


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription as the processor's event describes it."""

    external_id: str
    external_customer: str | None
    customer_id: object  # our customer id from the metadata, checked by customer_get
    price_ids: tuple[str, ...]  # every item's price, in the processor's order
    status: str  # ours: Subscription.Status
    period_start: datetime | None  # None: the event carries no period (a pause, a cancellation)
    period_end: datetime | None
    creation: bool = False  # a .created event: never overwrites a subscription we already have
    note: str = ""  # said in the outcome (a pause, kept as canceled)


def subscription_sync(event: WebhookEvent, state: SubscriptionState, actor: str) -> Outcome:
    """Create or update the subscription from the processor's state, never from an older event.

    Events of the same second are ordered by what they say: a .created never overwrites a
    subscription already known. A cancellation or a pause keeps the period (and the plan) it ends.
    """
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
        return Outcome.ignored(
            f"older than the last applied event ({subscription.last_event_at.isoformat()}): subscription unchanged",
            subscription.customer_id,
        )
    if subscription and state.creation:
        return Outcome.ignored(
            f"subscription {state.external_id} already known: a {event.event_type} never overwrites it",
            subscription.customer_id,
        )
    ending = state.status == Subscription.Status.CANCELED
    if ending and subscription:  # a cancellation keeps the plan and the period it ends
        plan = subscription.plan
        start, end = subscription.current_period_start, subscription.current_period_end
    else:
        current = subscription.plan if subscription else None
        if (
            current
            and state.price_ids
            and getattr(current, f"{event.processor}_price_id") == state.price_ids[0]
        ):
            plan = current  # the first item is still the plan's: no lookup
        else:
            plan = plan_for_prices(event.processor, state.price_ids)
        if state.period_start is None or state.period_end is None:
            raise WebhookNotYet(
                f"subscription {state.external_id} is not known here yet and the event carries no period"
            )
        start, end = state.period_start, state.period_end
    if end <= start:
        raise WebhookFailed("the subscription's period is empty")
    if subscription is None:
        customer = customer_get(state.customer_id)
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
    subscription.current_period_start = start
    subscription.current_period_end = end
    subscription.last_event_at = event.occurred_at or timezone.now()
    subscription.save()
    after = _subscription_snapshot(subscription)
    if before == after:
        return Outcome.processed("no change", customer.pk)
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
    # The period opened when it was first stored: only a new period (or subscription) opens one.
    new_period = before is None or (before["period_start"], before["period_end"]) != (
        after["period_start"],
        after["period_end"],
    )
    if not ending and new_period and _renew(customer_id=customer.pk, start=start, end=end, actor=actor):
        rolled = " Opened the usage period from the processor's period."
    change = "created" if before is None else "updated"
    return Outcome.processed(
        f"subscription {state.external_id} {change}: {plan.code}, {state.status}.{state.note}{rolled}{warning}",
        customer.pk,
    )


def _renew(**period) -> bool:
    """period_renew, its refusal of a period beyond the horizon stored as the event's failure."""
    try:
        return period_renew(**period)
    except PeriodOutsideHorizon as exc:
        raise WebhookFailed(str(exc)) from exc


def _subscription_snapshot(s: Subscription) -> dict:
    return {
        "plan": s.plan.code,
        "status": s.status,
        "period_start": s.current_period_start.isoformat(),
        "period_end": s.current_period_end.isoformat(),
    }


def renewal_apply(
    event: WebhookEvent, external_id: str, start: datetime, end: datetime, actor: str
) -> Outcome:
    subscription = (
        Subscription.objects.select_for_update()
        .filter(processor=event.processor, external_subscription_id=external_id)
        .first()
    )
    if subscription is None:  # the renewal came before its subscription: the processor retries
        raise WebhookNotYet(f"renewal of unknown {event.processor} subscription {external_id!r}")
    if end <= start:
        raise WebhookFailed("the renewal's period is empty")
    before = _subscription_snapshot(subscription)
    if start > subscription.current_period_start:
        subscription.current_period_start, subscription.current_period_end = start, end
        if subscription.status == Subscription.Status.PAST_DUE:
            subscription.status = Subscription.Status.ACTIVE  # paid
        subscription.save()
    opened = _renew(customer_id=subscription.customer_id, start=start, end=end, actor=actor)
    after = _subscription_snapshot(subscription)
    if not opened and before == after:
        return Outcome.processed(
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
    return Outcome.processed(
        f"renewal [{start.isoformat()}, {end.isoformat()}): {what}",
        subscription.customer_id,
    )


def credit_purchase(event: WebhookEvent, meta: Fields, external_ref: str, actor: str) -> Outcome:
    """A paid overage pack: its metadata names the customer, the metric and the quantity."""
    customer = customer_get(meta.raw("customer_id"))
    metric, quantity = _pack_metadata(meta)
    if CreditGrant.objects.filter(external_ref=external_ref).exists():
        return Outcome.processed(f"credit for {external_ref} already granted", customer.pk)
    try:
        grant = credit_grant(
            customer=customer,
            metric=metric,
            quantity=quantity,
            source=CreditGrant.Source.PURCHASE,
            actor=actor,
            reason=f"overage pack paid ({event.event_id})",
            external_ref=external_ref,
        )
    except CreditGrantError as exc:
        raise WebhookFailed(f"overage pack metadata: {exc}") from None
    return Outcome.processed(
        f"granted {grant.granted.normalize():f} {grant.metric} credit",
        customer.pk,
    )


def _pack_metadata(meta: Fields) -> tuple[str, object]:
    """The pack's metric and quantity as sent, the quantity bounded before any arithmetic."""
    metric = meta.text("metric", max_length=50)
    quantity = meta.raw("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, str | int) or len(str(quantity)) > 40:
        raise WebhookFailed(f"{meta.path}.quantity: expected a number as a string")
    parsed = meta.decimal("quantity") if str(quantity).strip() else None
    if parsed is None or not 0 < parsed < MAX_PACK_QUANTITY:  # 1e30 or 1E+5000 before any arithmetic
        raise WebhookFailed(f"overage pack metadata: {BAD_QUANTITY.format(quantity=quantity)}")
    return metric, quantity


# One statement each (SPEC §11): the usual deliveries, recorded and applied by one SQL function call
# (billing/sql/billing_webhook_*_apply.sql) with the outcomes and audit rows of the functions above.
# Each returns the function and its effect's arguments, or None when only the Python path applies
# the event (the function also hands back to it, by SQLSTATE WH001, whatever it finds unusual).


def subscription_sync_call(state: SubscriptionState, actor: str) -> tuple[str, list] | None:
    """subscription_sync of a subscription we have, in SQL; None for times the audit would write with an offset."""
    for at in (state.period_start, state.period_end):
        if at is not None and at.utcoffset() != timedelta(0):
            return None  # the Python path keeps the offset the processor sent in the audit row
    return "billing_webhook_subscription_apply", [
        actor,
        state.external_id,
        state.external_customer,
        list(state.price_ids),
        state.status,
        state.period_start,
        state.period_end,
        state.creation,
        state.note,
    ]


def credit_purchase_call(meta: Fields, external_ref: str, actor: str) -> tuple[str, list] | None:
    """credit_purchase in SQL, its metadata checked here first; None when it would fail."""
    pk = _customer_pk(meta.raw("customer_id"))
    if pk is None:
        return None
    try:
        metric, quantity = _pack_metadata(meta)
        quantity = credit_grant_quantity(metric, quantity)
    except (WebhookFailed, CreditGrantError):
        return None
    return "billing_webhook_pack_apply", [
        actor,
        pk,
        metric,
        quantity,
        str(quantity),
        f"granted {quantity.normalize():f} {metric} credit",
        external_ref,
    ]
