"""Finance reads each customer's plan by the live plan's one definition (billing_live_plan), though it
joins the set form (billing_live_by_customer) over a month of periods: a customer with no subscription
or only a canceled one is on Free, a canceled subscription never counts, a live one (trialing, active,
past due) does. The command's rows, the month page, the drill-down and the trends all agree with it."""

from decimal import Decimal

import pgtrigger
import pytest
from django.db import connection

from billing.finance.selectors import usage_by_plan, usage_trend
from billing.models import Plan, Subscription
from billing.ops.usage_report import usage_report
from billing.services.consume import consume
from demo.data import plans_ensure
from tests.factories import CustomerFactory, ProjectFactory, UsageEventFactory, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


def live_plan_code(customer) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.code FROM billing_live_plan(%s) lp JOIN plans p ON p.id = lp.plan_id", [customer.pk]
        )
        return cursor.fetchone()[0]


def test_every_finance_view_of_a_month_takes_each_customers_live_plan(staff_client):
    plans = plans_ensure()
    Plan.objects.update(ai_interactions_per_period=None)  # nobody is refused below
    kinds = {
        name: CustomerFactory(email=f"{name}@finance-plan.test")
        for name in ("no-subscription", "only-canceled", "canceled-then-trialing", "past-due", "active")
    }
    subscribe(kinds["only-canceled"], plans["growth"], Subscription.Status.CANCELED)
    subscribe(kinds["canceled-then-trialing"], plans["pro"], Subscription.Status.CANCELED)
    subscribe(kinds["canceled-then-trialing"], plans["starter"], Subscription.Status.TRIALING)
    subscribe(kinds["past-due"], plans["growth"], Subscription.Status.PAST_DUE)
    subscribe(kinds["active"], plans["pro"], Subscription.Status.ACTIVE)
    used = {}
    for n, customer in enumerate(kinds.values(), start=1):
        ProjectFactory(customer=customer)
        consume(customer_id=customer.pk, metric="ai_interaction", amount=10**n)  # 10, 100, ... per customer
        used[customer.email] = Decimal(10**n)

    expected = {c.email: live_plan_code(c) for c in kinds.values()}
    assert expected == {
        "no-subscription@finance-plan.test": "free",
        "only-canceled@finance-plan.test": "free",
        "canceled-then-trialing@finance-plan.test": "starter",
        "past-due@finance-plan.test": "growth",
        "active@finance-plan.test": "pro",
    }
    month = kinds["active"].current_period_start.strftime("%Y-%m")

    # The command's rows (and so the month page and its CSV, which aggregate its statement).
    rows = {r["email"]: r for r in usage_report(month) if r["email"] in expected}
    assert {email: r["plan"] for email, r in rows.items()} == expected
    per_plan = {}
    for email, code in expected.items():
        per_plan[code] = per_plan.get(code, 0) + used[email]
    by_plan, _ = usage_by_plan(month)
    assert {row.plan: row.metrics["ai"].used for row in by_plan} == per_plan

    # The trends' month.
    trend = usage_trend(month)
    column = trend["months"].index(month)
    assert {
        code: values[column] for code, values in trend["series"]["ai"].items() if values[column]
    } == per_plan

    # The drill-down: each customer under its live plan and under no other.
    finance = staff_client("fay", "Finance")
    for code in ("free", "starter", "growth", "pro"):
        listing = finance.get("/admin/usage/usagetracking/", {"month": month, "plan": code}).content.decode()
        assert {email for email in expected if email in listing} == {
            email for email, plan in expected.items() if plan == code
        }, code


def test_a_plan_change_mid_month_and_a_reconciled_counter_show_at_once(staff_client):
    """Nothing finance shows is kept aside: a customer moved to another plan mid-month is counted under
    the new plan (the plan now, as the command has it), and a drifted counter that reconciliation sets
    to the truth shows its true value on the next read."""
    from billing.ops.integrity import usage_reconcile
    from billing.services.plans import subscription_change_plan

    plans = plans_ensure()
    Plan.objects.update(ai_interactions_per_period=None)
    customer = CustomerFactory(email="mover@finance-plan.test")
    subscribe(customer, plans["starter"], Subscription.Status.ACTIVE)
    ProjectFactory(customer=customer)
    consume(customer_id=customer.pk, metric="ai_interaction", amount=7)
    month = customer.current_period_start.strftime("%Y-%m")

    def ai_by_plan():
        return {row.plan: row.metrics["ai"].used for row in usage_by_plan(month)[0] if row.metrics["ai"].used}

    assert ai_by_plan() == {"starter": 7}
    subscription_change_plan(customer=customer, target=plans["growth"], actor="test")
    assert ai_by_plan() == {"growth": 7}
    assert [r["plan"] for r in usage_report(month) if r["email"] == customer.email] == ["growth"]

    with pgtrigger.ignore("usage.UsageEvent:usage_events_on_insert"):  # drift: an event never counted
        UsageEventFactory(customer=customer, metric="ai_interaction", quantity=5)
    assert ai_by_plan() == {"growth": 7}  # the counters as they are
    usage_reconcile(customer_ids=[customer.pk], apply=True, started_by="test")
    assert ai_by_plan() == {"growth": 12}  # set to the truth: the next read shows it


def test_the_over_limit_page_follows_a_plan_change_and_a_cancellation_at_once():
    """The over-limit lines read the plan stamped on the current period, which a plan change or a
    cancellation restamps: 4 projects are over Starter (3), within Growth (10), over Free (1)."""
    from billing.finance.selectors import over_limit_customers
    from billing.services.plans import subscription_change_plan

    plans = plans_ensure()
    customer = CustomerFactory(email="limits@finance-plan.test")
    subscription = subscribe(customer, plans["starter"], Subscription.Status.ACTIVE)
    ProjectFactory.create_batch(4, customer=customer)

    def lines():
        return [
            (r.plan, r.metric, r.used, r.allowance)
            for r in over_limit_customers()
            if r.email == customer.email
        ]

    assert lines() == [("starter", "active_projects", 4, 3)]
    subscription_change_plan(customer=customer, target=plans["growth"], actor="test")
    assert lines() == []
    subscription.refresh_from_db()
    subscription.status = Subscription.Status.CANCELED
    subscription.save()
    assert lines() == [("free", "active_projects", 4, 1)]
