"""The usual webhook deliveries in one statement (SPEC §11, issue 10 item 5).

A known subscription's update and a paid pack are recorded and applied by one SQL function call
(billing/sql/billing_webhook_*_apply.sql); everything unusual is handed back to the Python path. The
same stream of events, sent through both paths, must leave the same rows: inbox, audit, subscriptions,
grants, usage periods, and the same HTTP answers.
"""

import threading
import urllib.error
import urllib.request
from datetime import timedelta
from uuid import UUID

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from billing.models import AuditLog, CreditGrant, Subscription, WebhookEvent
from demo import webhook_payloads as wp
from demo.data import plans_ensure
from tests.billing.test_webhook_traffic import (
    _now,
    paddle_subscription,
    stripe_event,
    stripe_subscription_basil,
)
from tests.billing.test_webhooks import PADDLE_SECRET, STRIPE_SECRET, post, wsgi_post
from tests.factories import CustomerFactory, ProjectFactory
from usage.models import Customer, UsageTracking

pytestmark = pytest.mark.django_db

C1, C2, C3 = (UUID(int=n) for n in (1, 2, 3))  # stripe on starter, paddle on pro, no subscription yet
S1, S2 = UUID(int=11), UUID(int=12)


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_SECRET
    settings.PADDLE_WEBHOOK_SECRET = PADDLE_SECRET
    settings.WEBHOOK_TOLERANCE_SECONDS = 300


def _customers(start, end):
    plans = plans_ensure()
    for pk in (C1, C2, C3):
        CustomerFactory(id=pk, current_period_start=start, current_period_end=end)
    for pk, customer, plan, processor, external in (
        (S1, C1, "starter", "stripe", "sub_os_stripe"),
        (S2, C2, "pro", "paddle", "sub_os_paddle"),
    ):
        Subscription.objects.create(
            id=pk,
            customer_id=customer,
            plan=plans[plan],
            processor=processor,
            external_subscription_id=external,
            current_period_start=start,
            current_period_end=end,
            last_event_at=start,
        )
    ProjectFactory.create_batch(  # C2 cannot move down to starter
        plans["starter"].max_active_projects + 2, customer=Customer.objects.get(pk=C2)
    )


def _stripe_sub(customer, price, start, end, *, sub_id="sub_os_stripe", status="active"):
    return wp.stripe_subscription(
        sub_id=sub_id, customer_id=customer, price_id=price, status=status, start=start, end=end
    )


def _stream(start, end):
    """(processor, payload) in arrival order: every branch of the effects, usual and not."""
    at = [start + timedelta(minutes=n) for n in range(1, 40)]
    later = (end, end + timedelta(days=30))
    upgrade = stripe_event(
        "customer.subscription.updated", _stripe_sub(C1, "price_demo_growth", start, end), created=at[1]
    )
    pack = wp.stripe_pack_checkout(customer_id=C1, metric="minutes", quantity="1000")
    pack["payment_intent"] = "pi_os_pack"
    failing_pack = wp.paddle_transaction(
        sub_id=None,
        origin="web",
        custom_data={"customer_id": str(UUID(int=99)), "metric": "minutes", "quantity": "5"},
    )
    failing_pack["id"] = "txn_os_not_yet"
    not_yet = wp.paddle_event(
        "transaction.completed", failing_pack, occurred=at[20], event_id="evt_os_not_yet"
    )
    paddle_pack = wp.paddle_transaction(
        sub_id=None,
        origin="web",
        custom_data={"customer_id": str(C2), "metric": "minutes", "quantity": "2.5"},
    )
    paddle_pack["id"] = "txn_os_pack"

    def paddle_sub(event_type, when, *, items, status="active", period=(start, end)):
        payload = paddle_subscription(C2, sub_id="sub_os_paddle", status=status, items=items, period=period)
        return wp.paddle_event(event_type, payload, occurred=when)

    return [
        ("stripe", upgrade),  # an upgrade
        (
            "stripe",
            stripe_event(  # the same state again: no change
                "customer.subscription.updated",
                _stripe_sub(C1, "price_demo_growth", start, end),
                created=at[2],
            ),
        ),
        (
            "stripe",
            stripe_event(  # older than the last applied
                "customer.subscription.updated", _stripe_sub(C1, "price_demo_pro", start, end), created=at[0]
            ),
        ),
        (
            "stripe",
            stripe_event(  # a .created never overwrites a known subscription
                "customer.subscription.created", _stripe_sub(C1, "price_demo_pro", start, end), created=at[3]
            ),
        ),
        (
            "stripe",
            stripe_event(  # a new period: opens it
                "customer.subscription.updated", _stripe_sub(C1, "price_demo_growth", *later), created=at[4]
            ),
        ),
        (
            "stripe",
            stripe_event(  # a downgrade nothing blocks
                "customer.subscription.updated", _stripe_sub(C1, "price_demo_starter", *later), created=at[5]
            ),
        ),
        (
            "paddle",
            paddle_sub("subscription.updated", at[6], items=["pri_demo_starter"]),
        ),  # blocked: a warning
        ("paddle", paddle_sub("subscription.updated", at[7], items=["pri_addon_seats", "pri_demo_growth"])),
        (
            "paddle",
            paddle_sub("subscription.paused", at[8], items=["pri_demo_growth"], status="paused", period=None),
        ),
        ("paddle", paddle_sub("subscription.resumed", at[9], items=["pri_demo_growth"])),
        (
            "stripe",
            stripe_event(  # a cancellation keeps the plan and the period
                "customer.subscription.deleted",
                _stripe_sub(C1, "price_demo_pro", start, end, status="canceled"),
                created=at[10],
            ),
        ),
        ("stripe", stripe_event("checkout.session.completed", pack, created=at[11])),
        ("stripe", stripe_event("checkout.session.async_payment_succeeded", pack, created=at[12])),  # granted
        ("paddle", wp.paddle_event("transaction.completed", paddle_pack, occurred=at[13])),
        ("paddle", not_yet),  # its customer is not there yet: 409
        (
            "stripe",
            stripe_event(  # a subscription new here: created
                "customer.subscription.updated",
                _stripe_sub(C3, "price_demo_growth", start, end, sub_id="sub_os_new"),
                created=at[15],
            ),
        ),
        (
            "stripe",
            stripe_event(  # a price no plan carries: stored failed
                "customer.subscription.updated",
                _stripe_sub(C3, "price_enterprise_2027", start, end, sub_id="sub_os_new"),
                created=at[16],
            ),
        ),
        (
            "stripe",
            stripe_event(  # a quantity beyond any pack: stored failed
                "checkout.session.completed",
                wp.stripe_pack_checkout(customer_id=C3, metric="minutes", quantity="1e30"),
                created=at[17],
            ),
        ),
        ("stripe", upgrade),  # a redelivery: changes nothing
        ("paddle", not_yet),  # retried: a second attempt
    ]


def _snapshot():
    """Everything the webhooks wrote, ids that differ between runs replaced by what they name."""
    subs = {str(s.pk): s.external_subscription_id for s in Subscription.objects.all()}
    grants = {str(g.pk): g.external_ref for g in CreditGrant.objects.all()}
    return {
        "inbox": [
            (
                e.event_id,
                e.status,
                e.outcome,
                e.error,
                e.customer_id,
                e.attempts,
                e.retry_expected,
                e.api_version,
            )
            for e in WebhookEvent.objects.order_by("id")
        ],
        "audit": [
            (
                a.actor,
                a.action,
                a.target_type,
                subs.get(a.target_id) or grants.get(a.target_id) or a.target_id,
                a.customer_id,
                a.before,
                a.after,
                a.reason,
            )
            for a in AuditLog.objects.order_by("id")
        ],
        "subscriptions": sorted(
            Subscription.objects.values_list(
                "external_subscription_id",
                "customer_id",
                "plan__code",
                "status",
                "external_customer_id",
                "current_period_start",
                "current_period_end",
                "last_event_at",
            )
        ),
        "grants": sorted(
            CreditGrant.objects.values_list(
                "external_ref",
                "customer_id",
                "metric",
                "granted",
                "remaining",
                "source",
                "created_by",
                "reason",
            )
        ),
        "periods": sorted(UsageTracking.objects.values_list("customer_id", "period_start", "period_end")),
        "customers": sorted(Customer.objects.values_list("id", "current_period_start", "current_period_end")),
    }


def _run(settings, one_statement: bool, start, end, stream):
    settings.WEBHOOK_ONE_STATEMENT = one_statement
    client = Client()
    answers = []
    with transaction.atomic():
        _customers(start, end)
        for processor, payload in stream:
            response = post(client, processor, payload)
            answers.append((response.status_code, response.json()))
        snapshot = _snapshot()
        transaction.set_rollback(True)
    return answers, snapshot


def test_both_paths_leave_the_same_rows_and_answers(settings):
    now = _now()
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    stream = _stream(start, end)  # the same events, ids included, through each path
    answers, snapshot = _run(settings, False, start, end, stream)
    answers_now, snapshot_now = _run(settings, True, start, end, stream)
    assert answers_now == answers
    for table in snapshot:
        assert snapshot_now[table] == snapshot[table], table
    statuses = [status for status, _ in answers]
    assert statuses.count(409) == 2 and statuses.count(200) == len(statuses) - 2
    outcomes = [row[2] for row in snapshot["inbox"]]
    for said in (
        "Opened the usage period",
        "Warning: Archive",
        "already granted",
        "older than the last applied",
    ):
        assert any(said in outcome for outcome in outcomes), said


@pytest.mark.parametrize(
    "kind", ["stripe update", "stripe update (basil)", "paddle update", "stripe pack", "paddle pack"]
)
def test_a_usual_delivery_is_one_statement(kind):
    now = _now()
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    _customers(start, end)
    if kind == "stripe update":
        processor, payload = (
            "stripe",
            stripe_event(
                "customer.subscription.updated", _stripe_sub(C1, "price_demo_growth", start, end), created=now
            ),
        )
    elif kind == "stripe update (basil)":  # API 2025-03-31 on: the period on each item, an add-on first
        sub = stripe_subscription_basil(
            C1,
            sub_id="sub_os_stripe",
            items=[
                ("price_seats_metered", "metered", start, end),
                ("price_demo_growth", "licensed", start, end),
            ],
        )
        processor, payload = (
            "stripe",
            stripe_event("customer.subscription.updated", sub, created=now, api_version="2025-03-31.basil"),
        )
    elif kind == "paddle update":
        processor, payload = (
            "paddle",
            wp.paddle_event(
                "subscription.updated",
                paddle_subscription(C2, sub_id="sub_os_paddle", items=["pri_demo_pro"], period=(start, end)),
                occurred=now,
            ),
        )
    elif kind == "stripe pack":
        processor, payload = (
            "stripe",
            stripe_event(
                "checkout.session.completed",
                wp.stripe_pack_checkout(customer_id=C1, metric="minutes", quantity=100),
                created=now,
            ),
        )
    else:
        processor, payload = (
            "paddle",
            wp.paddle_event(
                "transaction.completed",
                wp.paddle_transaction(
                    sub_id=None,
                    origin="web",
                    custom_data={"customer_id": str(C2), "metric": "minutes", "quantity": "7"},
                ),
                occurred=now,
            ),
        )
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        response = post(client, processor, payload)
    assert response.status_code == 200 and response.json()["status"] == "processed"
    sent = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(sent) == 1, sent
    assert "billing_webhook_" in sent[0]
    with CaptureQueriesContext(connection) as queries:
        again = post(client, processor, payload)
    assert again.json()["duplicate"] is True
    assert len([q for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["subscription update", "paddle pack"])
def test_four_parallel_deliveries_in_one_statement_apply_it_once(live_server, kind):
    from billing.services.webhooks import signature_header

    now = _now()
    start, end = now - timedelta(days=3), now + timedelta(days=27)
    _customers(start, end)
    if kind == "subscription update":
        processor, payload = (
            "stripe",
            stripe_event(
                "customer.subscription.updated", _stripe_sub(C1, "price_demo_pro", start, end), created=now
            ),
        )
    else:
        processor, payload = (
            "paddle",
            wp.paddle_event(
                "transaction.completed",
                wp.paddle_transaction(
                    sub_id=None,
                    origin="web",
                    custom_data={"customer_id": str(C2), "metric": "minutes", "quantity": "9"},
                ),
                occurred=now,
            ),
        )
    data = wp.body(payload)
    secret = STRIPE_SECRET if processor == "stripe" else PADDLE_SECRET
    barrier, answers, errors = threading.Barrier(4), [], []

    def deliver():
        request = urllib.request.Request(
            f"{live_server.url}/webhooks/{processor}/",
            data=data,
            method="POST",
            headers={
                "Content-Type": "application/json",
                f"{processor.title()}-Signature": signature_header(processor, data, secret),
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
    assert answers == [200] * 4
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.attempts) == ("processed", 1)
    if kind == "subscription update":
        assert Subscription.objects.get(pk=S1).plan.code == "pro"
        assert AuditLog.objects.filter(action="webhook_effect").count() == 1
    else:
        assert CreditGrant.objects.get(customer_id=C2).granted == 9
        assert AuditLog.objects.filter(action="credit_grant").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_wsgi_server_keeps_its_connection_between_deliveries():
    """What gunicorn runs: Django's WSGI handler, whose request signals close a connection older than
    CONN_MAX_AGE. A new connection costs more than a delivery (SPEC §11): it is kept, and checked."""
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()

    def deliver():
        payload = stripe_event("charge.succeeded", {"id": "ch_keep", "object": "charge"}, created=_now())
        assert wsgi_post(handler, payload) == "200 OK"
        return connection.connection

    assert connection.settings_dict["CONN_MAX_AGE"] == 60 and connection.settings_dict["CONN_HEALTH_CHECKS"]
    first = deliver()
    assert first is not None and deliver() is first
    connection.settings_dict["CONN_MAX_AGE"] = 0  # DATABASE_CONN_MAX_AGE=0: one connection per request
    try:
        connection.close()  # the next connection is opened with the new setting
        assert deliver() is None  # closed as the request finished: the next one connects again
    finally:
        connection.settings_dict["CONN_MAX_AGE"] = 60
    assert WebhookEvent.objects.filter(status="ignored").count() == 3
