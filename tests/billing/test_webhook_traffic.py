"""Webhooks in real traffic (SPEC §5, issue 10): each finding, with a small payload in the shape the
processor documents (the event cited above each builder), written here rather than copied.
"""

from datetime import timedelta
from uuid import uuid4

import pytest
from django.utils import timezone

from billing.models import AuditLog, CreditDraw, CreditGrant, Subscription, WebhookEvent
from billing.ops.findings import failed_webhook
from billing.services.webhooks import webhook_replay
from demo import webhook_payloads as wp
from demo.data import plans_ensure
from tests.billing.test_webhooks import PADDLE_SECRET, STRIPE_SECRET, post, state
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_SECRET
    settings.PADDLE_WEBHOOK_SECRET = PADDLE_SECRET
    settings.WEBHOOK_TOLERANCE_SECONDS = 300


def _now():
    return timezone.now().replace(microsecond=0)


def _unix(at):
    return int(at.timestamp())


# --- documented shapes ---------------------------------------------------------------------------


def paddle_subscription(
    customer_id,
    *,
    sub_id="sub_01hv8x29kz0t586xy6zn1a62ny",
    status="active",
    items,
    period=None,
    started_at=None,
    **extra,
):
    """Paddle Billing's subscription entity (developer.paddle.com/webhooks/subscriptions/subscription-updated):
    ``current_billing_period`` is null once paused or canceled; ``items`` lists every price, plan and add-ons."""
    start, end = period if period else (None, None)
    return {
        "id": sub_id,
        "status": status,
        "customer_id": "ctm_01hv6y1jedq4p1n0yqn5ba3ky4",
        "address_id": "add_01hv8gq3318ktkfengj2r75gfx",
        "currency_code": "USD",
        "started_at": wp._iso(started_at or start or _now()),
        "first_billed_at": wp._iso(started_at or start or _now()),
        "billing_cycle": {"interval": "month", "frequency": 1},
        "current_billing_period": {"starts_at": wp._iso(start), "ends_at": wp._iso(end)} if period else None,
        "scheduled_change": None,
        "items": [
            {
                "status": "active",
                "quantity": 1,
                "recurring": True,
                "price": {"id": price, "product_id": "pro_01gsz4t5hdjse780zja8vvr7jg"},
            }
            for price in items
        ],
        "custom_data": {"customer_id": str(customer_id)},
        **extra,
    }


def stripe_subscription_basil(customer_id, *, sub_id, items, status="active"):
    """A Stripe subscription from API 2025-03-31.basil on (docs.stripe.com/api/subscriptions/object):
    no subscription-level period; each item (docs.stripe.com/api/subscription_items/object) has its own."""
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": "cus_NffrFeUfNV2Hib",
        "status": status,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{n}",
                    "object": "subscription_item",
                    "price": {
                        "id": price,
                        "object": "price",
                        "recurring": {"interval": "month", "usage_type": usage},
                    },
                    "quantity": 1,
                    "current_period_start": _unix(start),
                    "current_period_end": _unix(end),
                }
                for n, (price, usage, start, end) in enumerate(items)
            ],
        },
        "metadata": {"customer_id": str(customer_id)},
    }


def stripe_event(event_type, obj, *, created, api_version="2024-06-20", event_id=None):
    event = wp.stripe_event(event_type, obj, created=created, event_id=event_id)
    event["api_version"] = api_version
    return event


# --- several items -------------------------------------------------------------------------------


def test_stripe_the_plan_is_the_first_item_whose_price_a_plan_carries_and_its_period_counts():
    from django.test import Client

    plans = plans_ensure()
    customer = CustomerFactory()
    now = _now()
    start, end = now - timedelta(days=2), now + timedelta(days=28)
    sub = stripe_subscription_basil(
        customer.pk,
        sub_id="sub_items",
        items=[
            (
                "price_seats_metered",
                "metered",
                now - timedelta(days=9),
                now + timedelta(days=5),
            ),  # add-on first
            ("price_demo_growth", "licensed", start, end),
        ],
    )
    event = stripe_event("customer.subscription.created", sub, created=now, api_version="2025-03-31.basil")
    response = post(Client(), "stripe", event)
    assert response.json()["status"] == "processed", WebhookEvent.objects.get().error
    subscription = Subscription.objects.get(external_subscription_id="sub_items")
    assert subscription.plan == plans["growth"]
    assert (subscription.current_period_start, subscription.current_period_end) == (start, end)


def test_paddle_the_plan_is_found_among_add_ons(client):
    plans = plans_ensure()
    customer = CustomerFactory()
    now = _now()
    data = paddle_subscription(
        customer.pk,
        items=["pri_addon_extra_storage", "pri_demo_pro", "pri_metered_minutes"],
        period=(now, now + timedelta(days=30)),
    )
    event = wp.paddle_event("subscription.created", data, occurred=now)
    assert post(client, "paddle", event).json()["status"] == "processed"
    assert Subscription.objects.get(processor="paddle").plan == plans["pro"]


def test_no_item_with_a_plan_price_is_a_permanent_failure_naming_every_price(client):
    plans_ensure()
    customer = CustomerFactory()
    now = _now()
    data = paddle_subscription(customer.pk, items=["pri_a", "pri_b"], period=(now, now + timedelta(days=30)))
    event = wp.paddle_event("subscription.created", data, occurred=now)
    response = post(client, "paddle", event)
    assert response.status_code == 200 and response.json()["status"] == "failed"
    stored = WebhookEvent.objects.get()
    assert "'pri_a', 'pri_b': none maps to a plan" in stored.error and not stored.retry_expected


# --- Paddle pause and cancellation ---------------------------------------------------------------


def _paddle_live(client, customer, *, sub_id="sub_01pause", plan="pri_demo_growth"):
    now = _now()
    period = (now - timedelta(days=3), now + timedelta(days=27))
    created = wp.paddle_event(
        "subscription.created",
        paddle_subscription(customer.pk, sub_id=sub_id, items=[plan], period=period),
        occurred=now - timedelta(minutes=5),
    )
    assert post(client, "paddle", created).json()["status"] == "processed"
    return period


def test_paddle_pause_with_a_null_period_ends_the_paid_plan_keeps_the_period_and_resume_restores_it(client):
    plans_ensure()
    customer = CustomerFactory()
    period = _paddle_live(client, customer)
    now = _now()
    # subscription.paused (developer.paddle.com/webhooks/subscriptions/subscription-paused):
    # status paused, paused_at set, current_billing_period null.
    paused = wp.paddle_event(
        "subscription.paused",
        paddle_subscription(
            customer.pk,
            sub_id="sub_01pause",
            status="paused",
            items=["pri_demo_growth"],
            started_at=period[0],
            paused_at=wp._iso(now),
        ),
        occurred=now,
    )
    response = post(client, "paddle", paused)
    assert response.status_code == 200 and response.json()["status"] == "processed", response.content
    subscription = Subscription.objects.get(external_subscription_id="sub_01pause")
    assert subscription.status == "canceled"  # no paid plan while paused
    assert (subscription.current_period_start, subscription.current_period_end) == period
    assert "Paused at Paddle" in WebhookEvent.objects.get(event_id=paused["event_id"]).outcome

    # subscription.resumed (developer.paddle.com/webhooks/subscriptions/subscription-resumed): active, new period.
    resumed_period = (now + timedelta(days=1), now + timedelta(days=31))
    resumed = wp.paddle_event(
        "subscription.resumed",
        paddle_subscription(
            customer.pk, sub_id="sub_01pause", items=["pri_demo_growth"], period=resumed_period
        ),
        occurred=now + timedelta(days=1),
    )
    assert post(client, "paddle", resumed).json()["status"] == "processed"
    subscription.refresh_from_db()
    assert subscription.status == "active"
    assert (subscription.current_period_start, subscription.current_period_end) == resumed_period


def test_paddle_canceled_at_its_start_is_applied_and_keeps_the_period(client):
    plans_ensure()
    customer = CustomerFactory()
    period = _paddle_live(client, customer, sub_id="sub_01cancel")
    # subscription.canceled (developer.paddle.com/webhooks/subscriptions/subscription-canceled):
    # status canceled, canceled_at set (here equal to started_at), current_billing_period null.
    canceled = wp.paddle_event(
        "subscription.canceled",
        paddle_subscription(
            customer.pk,
            sub_id="sub_01cancel",
            status="canceled",
            items=["pri_demo_growth"],
            started_at=period[0],
            canceled_at=wp._iso(period[0]),
        ),
        occurred=_now(),
    )
    response = post(client, "paddle", canceled)
    assert response.json()["status"] == "processed", WebhookEvent.objects.get(
        event_id=canceled["event_id"]
    ).error
    subscription = Subscription.objects.get(external_subscription_id="sub_01cancel")
    assert subscription.status == "canceled"
    assert (subscription.current_period_start, subscription.current_period_end) == period


# --- renewals with prorations --------------------------------------------------------------------


def _stripe_live(client, customer, sub_id, start, end):
    sub = wp.stripe_subscription(
        sub_id=sub_id,
        customer_id=customer.pk,
        price_id="price_demo_growth",
        status="active",
        start=start,
        end=end,
    )
    event = stripe_event("customer.subscription.created", sub, created=start)
    assert post(client, "stripe", event).json()["status"] == "processed"


@pytest.mark.parametrize("shape", ["2024-06-20", "2025-03-31.basil"])
def test_a_renewal_takes_the_subscription_lines_period_not_a_proration_listed_first(client, shape):
    plans_ensure()
    now = _now()
    customer = CustomerFactory(current_period_start=now - timedelta(days=30), current_period_end=now)
    _stripe_live(client, customer, "sub_prorated", now - timedelta(days=30), now)
    new_end = now + timedelta(days=30)
    proration_span = (now - timedelta(days=10), now)
    if shape == "2024-06-20":
        # invoice.paid before basil (docs.stripe.com/api/invoices/line_item, 2024-06-20): type + proration.
        lines = [
            {
                "id": "il_1",
                "object": "line_item",
                "type": "invoiceitem",
                "proration": True,
                "period": {"start": _unix(proration_span[0]), "end": _unix(proration_span[1])},
            },
            {
                "id": "il_2",
                "object": "line_item",
                "type": "subscription",
                "proration": False,
                "period": {"start": _unix(now), "end": _unix(new_end)},
            },
        ]
        invoice = {
            "id": "in_1",
            "object": "invoice",
            "billing_reason": "subscription_cycle",
            "subscription": "sub_prorated",
            "lines": {"object": "list", "data": lines},
        }
    else:
        # invoice.paid since basil: parent.subscription_details.subscription; line.parent.*_details.proration.
        lines = [
            {
                "id": "il_1",
                "object": "line_item",
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": {"proration": True, "subscription": "sub_prorated"},
                },
                "period": {"start": _unix(proration_span[0]), "end": _unix(proration_span[1])},
            },
            {
                "id": "il_2",
                "object": "line_item",
                "parent": {
                    "type": "subscription_item_details",
                    "subscription_item_details": {"proration": False, "subscription": "sub_prorated"},
                },
                "period": {"start": _unix(now), "end": _unix(new_end)},
            },
        ]
        invoice = {
            "id": "in_1",
            "object": "invoice",
            "billing_reason": "subscription_cycle",
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": "sub_prorated"},
            },
            "lines": {"object": "list", "data": lines},
        }
    event = stripe_event("invoice.paid", invoice, created=now, api_version=shape)
    assert post(client, "stripe", event).json()["status"] == "processed"
    customer.refresh_from_db()
    assert (customer.current_period_start, customer.current_period_end) == (now, new_end)
    subscription = Subscription.objects.get(external_subscription_id="sub_prorated")
    assert (subscription.current_period_start, subscription.current_period_end) == (now, new_end)


# --- same-second ordering ------------------------------------------------------------------------


def test_a_created_event_arriving_after_updated_of_the_same_second_changes_nothing(client):
    plans_ensure()
    customer = CustomerFactory()
    now = _now()
    start, end = now, now + timedelta(days=30)

    def event(event_type, status):
        sub = wp.stripe_subscription(
            sub_id="sub_same",
            customer_id=customer.pk,
            price_id="price_demo_growth",
            status=status,
            start=start,
            end=end,
        )
        return stripe_event(event_type, sub, created=now)

    assert (
        post(client, "stripe", event("customer.subscription.updated", "active")).json()["status"]
        == "processed"
    )
    late = event("customer.subscription.created", "incomplete")
    assert post(client, "stripe", late).json()["status"] == "ignored"
    assert Subscription.objects.get(external_subscription_id="sub_same").status == "active"
    assert "never overwrites" in WebhookEvent.objects.get(event_id=late["id"]).outcome


# --- transient and permanent failures ------------------------------------------------------------


def test_a_renewal_before_its_subscription_is_retried_by_the_processor_and_closed_by_a_later_success(client):
    plans_ensure()
    now = _now()
    customer = CustomerFactory(current_period_start=now - timedelta(days=30), current_period_end=now)
    renewal = stripe_event(
        "invoice.paid",
        wp.stripe_invoice_paid(
            sub_id="sub_later", start=now, end=now + timedelta(days=30), price_id="price_demo_growth"
        ),
        created=now,
    )
    before = state()
    for attempt in (1, 2):
        response = post(client, "stripe", renewal)
        assert response.status_code == 409 and response.json()["retry"] is True
        stored = WebhookEvent.objects.get(event_id=renewal["id"])
        assert (stored.status, stored.attempts, stored.retry_expected) == ("failed", attempt, True)
        assert "renewal of unknown stripe subscription 'sub_later'" in stored.error
    after = state()
    assert after[0] == before[0] + 1 and after[1:] == before[1:]
    assert [f for f in failed_webhook() if f.target_id == renewal["id"]] == []  # the processor retries

    _stripe_live(client, customer, "sub_later", now - timedelta(days=30), now)
    response = post(client, "stripe", renewal)  # the processor's next attempt
    assert response.status_code == 200 and response.json()["status"] == "processed"
    stored.refresh_from_db()
    assert (stored.status, stored.attempts, stored.error, stored.retry_expected) == (
        "processed",
        3,
        "",
        False,
    )
    customer.refresh_from_db()
    assert customer.current_period_start == now


def test_an_event_for_a_customer_not_there_yet_is_retried(client):
    plans_ensure()
    sub = wp.stripe_subscription(
        sub_id="sub_nocust",
        customer_id=uuid4(),
        price_id="price_demo_growth",
        status="active",
        start=_now(),
        end=_now() + timedelta(days=30),
    )
    response = post(client, "stripe", stripe_event("customer.subscription.created", sub, created=_now()))
    assert response.status_code == 409
    assert WebhookEvent.objects.get().retry_expected


def test_a_permanent_failure_answers_200_needs_a_person_and_replays(client):
    plans = plans_ensure()
    customer = CustomerFactory()
    sub = wp.stripe_subscription(
        sub_id="sub_perm",
        customer_id=customer.pk,
        price_id="price_new_2027",
        status="active",
        start=_now(),
        end=_now() + timedelta(days=30),
    )
    event = stripe_event("customer.subscription.created", sub, created=_now())
    response = post(client, "stripe", event)
    assert response.status_code == 200 and response.json()["status"] == "failed"
    stored = WebhookEvent.objects.get()
    assert not stored.retry_expected
    assert [f.target_id for f in failed_webhook()] == [event["id"]]
    plans["growth"].stripe_price_id = "price_new_2027"
    plans["growth"].save()
    assert webhook_replay(stored, actor="sam").status == "processed"
    assert list(failed_webhook()) == []


def test_a_transient_failure_still_failing_after_three_days_needs_a_person(client):
    plans_ensure()
    renewal = stripe_event(
        "invoice.paid",
        wp.stripe_invoice_paid(
            sub_id="sub_never", start=_now(), end=_now() + timedelta(days=30), price_id="price_demo_growth"
        ),
        created=_now(),
    )
    assert post(client, "stripe", renewal).status_code == 409
    WebhookEvent.objects.update(received_at=timezone.now() - timedelta(days=3, minutes=1))
    assert [f.target_id for f in failed_webhook()] == [renewal["id"]]


# --- packs paid asynchronously or as a one-off charge --------------------------------------------


def test_a_pack_paid_by_sepa_grants_when_the_async_payment_succeeds(client):
    plans_ensure()
    customer = CustomerFactory()
    # checkout.session.completed with payment_status "unpaid" (docs.stripe.com/payments/checkout/fulfill-orders:
    # delayed notification methods), then checkout.session.async_payment_succeeded with "paid".
    session = wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=250)
    session["payment_status"] = "unpaid"
    completed = stripe_event("checkout.session.completed", session, created=_now())
    assert post(client, "stripe", completed).json()["status"] == "ignored"
    assert not CreditGrant.objects.exists()
    paid = dict(session, payment_status="paid")
    succeeded = stripe_event(
        "checkout.session.async_payment_succeeded", paid, created=_now() + timedelta(days=2)
    )
    assert post(client, "stripe", succeeded).json()["status"] == "processed"
    grant = CreditGrant.objects.get(customer=customer)
    assert (grant.granted, grant.external_ref) == (250, f"stripe:{session['payment_intent']}")


def test_a_paddle_pack_sold_as_a_one_off_charge_on_a_subscription_grants(client):
    plans_ensure()
    customer = CustomerFactory()
    _paddle_live(client, customer, sub_id="sub_01charge")
    # transaction.completed with origin "subscription_charge" (developer.paddle.com/changelog/2023/
    # subscription-charge-transaction-origin): a one-time charge billed to the subscription.
    txn = wp.paddle_transaction(
        sub_id="sub_01charge",
        origin="subscription_charge",
        custom_data={"metric": "ai_interaction", "quantity": "1000"},
    )
    event = wp.paddle_event("transaction.completed", txn, occurred=_now())
    assert post(client, "paddle", event).json()["status"] == "processed"
    grant = CreditGrant.objects.get(customer=customer)
    assert (grant.metric, grant.granted) == ("ai_interaction", 1000)


# --- refunds and chargebacks ---------------------------------------------------------------------


def _pack_with_use(client, customer, used=30):
    session = wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=100)
    assert (
        post(client, "stripe", stripe_event("checkout.session.completed", session, created=_now())).json()[
            "status"
        ]
        == "processed"
    )
    grant = CreditGrant.objects.get(customer=customer)
    CreditDraw.objects.create(grant=grant, customer=customer, quantity=used)  # usage beyond the allowance
    return session, grant


def test_a_refunded_stripe_pack_takes_back_what_is_left_once_as_a_ledger_entry_and_audits_what_was_used(
    client,
):
    plans_ensure()
    customer = CustomerFactory()
    session, grant = _pack_with_use(client, customer)
    # charge.refunded (docs.stripe.com/api/events/types#event_types-charge.refunded): a charge object.
    charge = {
        "id": "ch_3MmlLrLkdIwHu7ix0snN0B15",
        "object": "charge",
        "amount": 1000,
        "amount_refunded": 1000,
        "refunded": True,
        "payment_intent": session["payment_intent"],
        "status": "succeeded",
    }
    refund = stripe_event("charge.refunded", charge, created=_now())
    assert post(client, "stripe", refund).json()["status"] == "processed"
    grant.refresh_from_db()
    assert grant.remaining == 0
    entry = CreditDraw.objects.get(grant=grant, kind="refund")
    assert entry.quantity == 70 and entry.usage_event_id is None
    audit = AuditLog.objects.get(target_type="credit_grant", action="webhook_effect")
    assert audit.before == {"remaining": "70.000", "used": "30.000"}
    assert audit.after["taken_back"] == "70.000"
    assert "30 had already been used" in WebhookEvent.objects.get(event_id=refund["id"]).outcome
    # A dispute of the same payment later: nothing more to take back.
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "charge": charge["id"],
        "amount": 1000,
        "payment_intent": session["payment_intent"],
        "status": "needs_response",
    }
    assert (
        post(client, "stripe", stripe_event("charge.dispute.created", dispute, created=_now())).json()[
            "status"
        ]
        == "processed"
    )
    assert CreditDraw.objects.filter(grant=grant).exclude(kind="usage").count() == 1


def _stripe_dispute(session, status, dispute_id="dp_1MtJUT2eZvKYlo2CNaw2HvEv"):
    """A Stripe dispute (docs.stripe.com/api/disputes/object), as charge.dispute.created and
    charge.dispute.closed carry it (docs.stripe.com/api/events/types#event_types-charge.dispute.closed)."""
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": 1000,
        "balance_transactions": [],
        "charge": "ch_3MtJUS2eZvKYlo2C1ACo3Y7D",
        "created": _unix(_now()),
        "currency": "usd",
        "evidence": {"customer_email_address": None, "uncategorized_text": None},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": session["payment_intent"],
        "reason": "fraudulent",
        "status": status,
    }


def test_a_dispute_won_later_gives_back_what_its_chargeback_took_once(client):
    plans_ensure()
    customer = CustomerFactory()
    session, grant = _pack_with_use(client, customer)  # 100 minutes, 30 used
    opened = stripe_event(
        "charge.dispute.created", _stripe_dispute(session, "needs_response"), created=_now()
    )
    assert post(client, "stripe", opened).json()["status"] == "processed"
    grant.refresh_from_db()
    assert grant.remaining == 0

    won = stripe_event("charge.dispute.closed", _stripe_dispute(session, "won"), created=_now())
    assert post(client, "stripe", won).json()["status"] == "processed"
    grant.refresh_from_db()
    assert grant.remaining == 70  # what the chargeback took; what usage drew stays drawn
    back = CreditDraw.objects.get(grant=grant, kind="chargeback", quantity__lt=0)
    assert back.quantity == -70 and back.usage_event_id is None
    audit = AuditLog.objects.filter(target_type="credit_grant", action="webhook_effect").latest("id")
    assert audit.before == {"remaining": "0.000"}
    assert audit.after == {"remaining": "70.000", "given_back": "70.000"}
    assert audit.reason == f"pack dispute won (charge.dispute.closed {won['id']})"
    assert "gave back 70 minutes credit" in WebhookEvent.objects.get(event_id=won["id"]).outcome

    # Redelivered, or told again (charge.dispute.funds_reinstated's twin): nothing more comes back.
    assert post(client, "stripe", won).json()["duplicate"] is True
    again = stripe_event("charge.dispute.closed", _stripe_dispute(session, "won"), created=_now())
    assert post(client, "stripe", again).json()["status"] == "processed"
    assert WebhookEvent.objects.get(event_id=again["id"]).outcome.startswith("dispute won: the chargeback")
    grant.refresh_from_db()
    assert grant.remaining == 70

    # A refund after the won dispute takes back what is left again.
    charge = {
        "id": "ch_3MtJUS2eZvKYlo2C1ACo3Y7D",
        "object": "charge",
        "amount": 1000,
        "amount_refunded": 1000,
        "refunded": True,
        "payment_intent": session["payment_intent"],
        "status": "succeeded",
    }
    assert (
        post(client, "stripe", stripe_event("charge.refunded", charge, created=_now())).json()["status"]
        == "processed"
    )
    grant.refresh_from_db()
    assert grant.remaining == 0


def test_a_dispute_lost_keeps_the_credit_taken_and_one_without_a_pack_is_ignored(client):
    plans_ensure()
    customer = CustomerFactory()
    session, grant = _pack_with_use(client, customer)
    post(
        client,
        "stripe",
        stripe_event("charge.dispute.created", _stripe_dispute(session, "needs_response"), created=_now()),
    )
    lost = stripe_event("charge.dispute.closed", _stripe_dispute(session, "lost"), created=_now())
    answer = post(client, "stripe", lost).json()
    assert answer["status"] == "ignored"
    grant.refresh_from_db()
    assert grant.remaining == 0
    assert "stays taken" in WebhookEvent.objects.get(event_id=lost["id"]).outcome
    other = stripe_event(
        "charge.dispute.closed",
        _stripe_dispute({"payment_intent": "pi_subscription_invoice"}, "won", dispute_id="dp_other"),
        created=_now(),
    )
    assert post(client, "stripe", other).json()["status"] == "ignored"
    assert CreditDraw.objects.filter(quantity__lt=0).count() == 0


def test_a_refund_of_a_payment_that_bought_no_pack_is_ignored(client):
    charge = {
        "id": "ch_sub",
        "object": "charge",
        "amount": 2900,
        "amount_refunded": 2900,
        "refunded": True,
        "payment_intent": "pi_subscription_invoice",
    }
    assert (
        post(client, "stripe", stripe_event("charge.refunded", charge, created=_now())).json()["status"]
        == "ignored"
    )


def test_a_paddle_pack_refund_is_taken_back_once_approved(client):
    plans_ensure()
    customer = CustomerFactory()
    txn = wp.paddle_transaction(
        sub_id=None,
        origin="web",
        custom_data={"customer_id": str(customer.pk), "metric": "minutes", "quantity": "100"},
    )
    assert (
        post(client, "paddle", wp.paddle_event("transaction.completed", txn, occurred=_now())).json()[
            "status"
        ]
        == "processed"
    )
    grant = CreditGrant.objects.get(customer=customer)

    # adjustment.created then adjustment.updated (developer.paddle.com/webhooks/adjustments/adjustment-created):
    # a refund is created pending_approval; approved later.
    def adjustment(event_type, status):
        data = {
            "id": "adj_01hvgf2s84dr6reszzg29zbvcm",
            "action": "refund",
            "type": "full",
            "transaction_id": txn["id"],
            "customer_id": "ctm_01hv6y1jedq4p1n0yqn5ba3ky4",
            "reason": "error",
            "status": status,
            "currency_code": "USD",
            "totals": {
                "subtotal": "1000",
                "tax": "0",
                "total": "1000",
                "fee": "55",
                "earnings": "945",
                "currency_code": "USD",
            },
        }
        return wp.paddle_event(event_type, data, occurred=_now())

    assert (
        post(client, "paddle", adjustment("adjustment.created", "pending_approval")).json()["status"]
        == "ignored"
    )
    grant.refresh_from_db()
    assert grant.remaining == 100
    assert (
        post(client, "paddle", adjustment("adjustment.updated", "approved")).json()["status"] == "processed"
    )
    grant.refresh_from_db()
    assert grant.remaining == 0 and CreditDraw.objects.get(grant=grant).kind == "refund"


# --- thin events, API versions, the admin --------------------------------------------------------


def test_a_stripe_thin_event_gets_a_400_that_says_so(client):
    # A thin event (docs.stripe.com/event-destinations#thin-events): object v2.core.event, related_object, no data.
    thin = {
        "id": "evt_test_65R9Ijk8ZyoBqpDDgJ7sUo8nt",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "created": "2024-09-17T06:20:52.246Z",
        "livemode": False,
        "related_object": {
            "id": "mtr_test_61R9IjkxyCxkB1G3x41",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_test_61R9IjkxyCxkB1G3x41",
        },
    }
    before = state()
    response = post(client, "stripe", thin)
    assert response.status_code == 400 and "thin event" in response.json()["error"]
    assert state() == before


def test_the_inbox_keeps_the_api_version_and_the_admin_flags_unexpected_ones_and_shows_attempts(
    client, staff_client
):
    plans_ensure()
    for version in ("2024-06-20", "2026-01-28.clover"):
        event = stripe_event(
            "charge.succeeded",
            {"id": f"ch_{version}", "object": "charge"},
            created=_now(),
            api_version=version,
        )
        post(client, "stripe", event)
    assert sorted(WebhookEvent.objects.values_list("api_version", flat=True)) == [
        "2024-06-20",
        "2026-01-28.clover",
    ]
    renewal = stripe_event(
        "invoice.paid",
        wp.stripe_invoice_paid(
            sub_id="sub_gone", start=_now(), end=_now() + timedelta(days=30), price_id="price_demo_growth"
        ),
        created=_now(),
    )
    post(client, "stripe", renewal)
    post(client, "stripe", renewal)
    page = staff_client("sam", "Support").get("/admin/billing/webhookevent/").content.decode()
    assert "⚠ 2026-01-28.clover" in page and "⚠ 2024-06-20" not in page
    assert (
        "renewal of unknown stripe subscription &#x27;sub_gone&#x27; (waiting for the processor&#x27;s retry)"
        in page
    )
    assert '<td class="field-status_shown">Failed, after 2 attempts</td>' in page


# --- exactly once, in parallel, on the one-transaction path --------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["pack", "ignored type", "renewal not there yet"])
def test_four_parallel_deliveries_of_one_event_apply_it_once(live_server, kind):
    import threading
    import urllib.error
    import urllib.request

    from billing.services.webhooks import signature_header

    plans_ensure()
    customer = CustomerFactory()
    if kind == "pack":
        payload = stripe_event(
            "checkout.session.completed",
            wp.stripe_pack_checkout(customer_id=customer.pk, metric="minutes", quantity=40),
            created=_now(),
        )
    elif kind == "ignored type":
        payload = stripe_event("charge.succeeded", {"id": "ch_par", "object": "charge"}, created=_now())
    else:
        payload = stripe_event(
            "invoice.paid",
            wp.stripe_invoice_paid(
                sub_id="sub_par_missing",
                start=_now(),
                end=_now() + timedelta(days=30),
                price_id="price_demo_growth",
            ),
            created=_now(),
        )
    data = wp.body(payload)
    barrier, answers, errors = threading.Barrier(4), [], []

    def deliver():
        request = urllib.request.Request(
            f"{live_server.url}/webhooks/stripe/",
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": signature_header("stripe", data, STRIPE_SECRET),
            },
        )
        try:
            barrier.wait(timeout=30)
            with urllib.request.urlopen(request, timeout=60) as response:
                answers.append(response.status)
        except urllib.error.HTTPError as exc:
            answers.append(exc.code)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    stored = WebhookEvent.objects.get()
    if kind == "pack":
        assert answers == [200] * 4 and CreditGrant.objects.get(customer=customer).granted == 40
        assert AuditLog.objects.filter(action="credit_grant").count() == 1
    elif kind == "ignored type":
        assert answers == [200] * 4 and stored.status == "ignored"
    else:  # each delivery is an attempt the processor made; none wrote anything else
        assert answers == [409] * 4 and (stored.status, stored.attempts) == ("failed", 4)
        assert not AuditLog.objects.exists()


def test_a_dispute_closed_won_before_its_created_arrives_takes_nothing_back(client):
    """Stripe does not promise event order: charge.dispute.closed (won) can reach us before
    charge.dispute.created. The late created then takes nothing, and a refund after still can."""
    plans_ensure()
    customer = CustomerFactory()
    session, grant = _pack_with_use(client, customer)  # 100 minutes, 30 used
    won = stripe_event("charge.dispute.closed", _stripe_dispute(session, "won"), created=_now())
    assert post(client, "stripe", won).json()["status"] == "processed"
    opened = stripe_event(
        "charge.dispute.created",
        _stripe_dispute(session, "needs_response"),
        created=_now() - timedelta(days=20),  # created long before it closed
    )
    answer = post(client, "stripe", opened).json()
    assert answer["status"] == "processed"
    outcome = WebhookEvent.objects.get(event_id=opened["id"]).outcome
    assert (
        outcome
        == f"dispute dp_1MtJUT2eZvKYlo2CNaw2HvEv was already closed won ({won['id']}): nothing taken back"
    )
    grant.refresh_from_db()
    assert grant.remaining == 70
    assert not CreditDraw.objects.filter(grant=grant, kind="chargeback").exists()
    assert not AuditLog.objects.filter(target_type="credit_grant", action="webhook_effect").exists()
    # Another customer's dispute of another pack is not settled by this one's close.
    other_session, other_grant = _pack_with_use(client, CustomerFactory())
    other = stripe_event(
        "charge.dispute.created",
        _stripe_dispute(other_session, "needs_response", dispute_id="dp_other"),
        created=_now(),
    )
    assert post(client, "stripe", other).json()["status"] == "processed"
    other_grant.refresh_from_db()
    assert other_grant.remaining == 0
    # A refund of the first pack after all this takes back what is left.
    charge = {
        "id": "ch_3MtJUS2eZvKYlo2C1ACo3Y7D",
        "object": "charge",
        "amount": 1000,
        "amount_refunded": 1000,
        "refunded": True,
        "payment_intent": session["payment_intent"],
        "status": "succeeded",
    }
    assert post(client, "stripe", stripe_event("charge.refunded", charge, created=_now())).json()[
        "status"
    ] == ("processed")
    grant.refresh_from_db()
    assert grant.remaining == 0
