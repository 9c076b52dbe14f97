"""The report reads each customer's live plan as a set (billing_live_by_customer joined once, none: the
plan billing_live_plan(NULL) gives), where it called billing_live_plan() per customer: a million index
probes at 1M customers. The set must give every kind of customer the plan and the subscription the
one definition gives: no subscription or only a canceled one is on Free, a canceled subscription never
counts (neither its plan nor its ended period), a live one does. The over-limit finding (the report's,
after its drift scan, and the per-customer one), the customer list's usage rows and the stale-period
finding all agree with billing_live_plan() customer by customer."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import Plan, Subscription
from billing.ops.findings import over_limit, stale_period
from billing.ops.integrity import discrepancy_report
from billing.selectors import customer_usage
from demo.data import plans_ensure
from tests.factories import CustomerFactory
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db

KINDS = ("no-subscription", "only-canceled", "canceled-then-trialing", "past-due", "active")


def subscribe(customer, plan, status, *, ended=False):
    end = timezone.now() - timedelta(days=2) if ended else customer.current_period_end
    return Subscription.objects.create(
        customer=customer,
        plan=plan,
        status=status,
        processor="manual",
        current_period_start=end - timedelta(days=30),
        current_period_end=end,
    )


def live_plan(customer) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.name, lp.subscription_status FROM billing_live_plan(%s) lp JOIN plans p ON p.id = lp.plan_id",
            [customer.pk],
        )
        return cursor.fetchone()


@pytest.fixture
def kinds():
    plans = plans_ensure()
    # Every plan limits AI interactions, each to its own number: the finding names plan and allowance.
    for n, plan in enumerate(Plan.objects.order_by("code"), start=1):
        plan.ai_interactions_per_period = n
        plan.save()
    customers = {name: CustomerFactory(email=f"{name}@report-plan.test") for name in KINDS}
    for customer in customers.values():
        customer.refresh_from_db()  # the period bounds the database chose
    # Canceled subscriptions whose period ended long ago: never the plan, never a stale finding.
    subscribe(customers["only-canceled"], plans["growth"], Subscription.Status.CANCELED, ended=True)
    subscribe(customers["canceled-then-trialing"], plans["pro"], Subscription.Status.CANCELED, ended=True)
    subscribe(customers["canceled-then-trialing"], plans["starter"], Subscription.Status.TRIALING)
    # A live subscription whose period ended without a renewal: stale.
    subscribe(customers["past-due"], plans["growth"], Subscription.Status.PAST_DUE, ended=True)
    subscribe(customers["active"], plans["pro"], Subscription.Status.ACTIVE)
    for customer in customers.values():
        UsageEvent.objects.create(customer=customer, metric="ai_interaction", quantity=100)
    return customers


def test_the_reports_findings_take_each_customers_live_plan(kinds):
    expected = {c.email: live_plan(c) for c in kinds.values()}
    assert {email: status for email, (_, status) in expected.items()} == {
        "no-subscription@report-plan.test": "none",
        "only-canceled@report-plan.test": "none",
        "canceled-then-trialing@report-plan.test": "trialing",
        "past-due@report-plan.test": "past_due",
        "active@report-plan.test": "active",
    }
    allowance = {p.name: p.ai_interactions_per_period for p in Plan.objects.all()}

    report = discrepancy_report(started_by="test")
    for found in (
        [f for f in report.findings if f.check == "over_limit"],  # after the report's drift scan
        list(over_limit()),  # per customer, no scan
        list(over_limit([c.pk for c in kinds.values()])),  # a selection's (the admin action's)
    ):
        by_email = {f.email: f.detail for f in found if f.email in expected}
        assert by_email == {
            email: f"100 / {allowance[plan]} AI interactions ({100 / allowance[plan] * 100:.0f} %) on {plan}"
            for email, (plan, _) in expected.items()
        }

    rows = customer_usage([c.pk for c in kinds.values()])
    assert {r.email: (r.plan_name, r.subscription_status or "none") for r in rows.values()} == expected

    stale = {(f.email, f.detail.split(" period ")[0]) for f in stale_period() if f.email in expected}
    assert stale == {("past-due@report-plan.test", "manual subscription")}
    assert {f.email for f in report.findings if f.check == "stale_period"} & set(expected) == {
        "past-due@report-plan.test"
    }
