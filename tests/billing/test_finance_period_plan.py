"""A month's usage is attributed to the plan in effect for each usage period, not the customer's plan
now (SPEC §7 Finance, issue 12's decision): the period carries its plan (usage_tracking.plan_id),
stamped as it opens and restamped while it runs when the plan changes. A plan change today moves no
past month between plans, and every finance view of a month agrees: usage_report --month (and so the
month page and its CSV), the trends and the drill-down."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from billing.finance.selectors import usage_by_plan, usage_trend
from billing.models import Plan, Subscription
from billing.ops.usage_report import usage_report
from billing.services.periods import period_roll_due
from billing.services.plans import subscription_change_plan
from demo.data import plans_ensure
from tests.factories import CustomerFactory, UsageEventFactory, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


def last_month_and_now(customer):
    now = customer.current_period_start.strftime("%Y-%m")
    last = (customer.current_period_start - timedelta(days=1)).strftime("%Y-%m")
    return last, now


def views_of(month, email, finance):
    """The plan each finance view gives the customer's usage in ``month``."""
    report = {r["plan"] for r in usage_report(month) if r["email"] == email}
    page = {row.plan for row in usage_by_plan(month)[0] if row.metrics["ai"].used}
    trend = usage_trend(month)
    column = trend["months"].index(month)
    trends = {code for code, values in trend["series"]["ai"].items() if values[column]}
    drill = {
        code
        for code in ("free", "starter", "growth", "pro")
        if email
        in finance.get("/admin/usage/usagetracking/", {"month": month, "plan": code}).content.decode()
    }
    return {"report": report, "page": page, "trends": trends, "drill-down": drill}


def both(code):
    return {"report": {code}, "page": {code}, "trends": {code}, "drill-down": {code}}


def test_a_plan_change_moves_the_current_period_and_leaves_past_periods_on_theirs(staff_client):
    plans = plans_ensure()
    Plan.objects.update(ai_interactions_per_period=None)
    finance = staff_client("fay", "Finance")
    customer = CustomerFactory(email="mover@period-plan.test")
    subscribe(customer, plans["starter"])
    last, now = last_month_and_now(customer)
    # Last month's period, opened by the counter trigger (a late event), and this month's.
    UsageEventFactory(
        customer=customer, quantity=5, occurred_at=customer.current_period_start - timedelta(days=3)
    )
    UsageEventFactory(customer=customer, quantity=7)
    assert views_of(last, customer.email, finance) == both("starter")
    assert views_of(now, customer.email, finance) == both("starter")

    subscription_change_plan(customer=customer, target=plans["growth"], actor="test")
    assert views_of(now, customer.email, finance) == both("growth")  # the period that runs moves
    assert views_of(last, customer.email, finance) == both("starter")  # the past keeps its plan

    # Again, and a cancellation (Free): last month still starter, this month follows the plan.
    subscription_change_plan(customer=customer, target=plans["pro"], actor="test")
    Subscription.objects.filter(customer=customer).update(status=Subscription.Status.CANCELED)
    assert views_of(now, customer.email, finance) == both("free")
    assert views_of(last, customer.email, finance) == both("starter")
    by_plan = {row.plan: row.metrics["ai"].used for row in usage_by_plan(last)[0]}
    assert by_plan == {"starter": Decimal(5)}


def test_a_period_opened_by_rollover_is_stamped_with_the_plan_in_effect():
    plans = plans_ensure()
    customer = CustomerFactory(email="roller@period-plan.test")
    subscribe(customer, plans["growth"])
    start = customer.current_period_start
    end = customer.current_period_end
    assert period_roll_due(now=end + timedelta(hours=1), actor="test") >= 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.code FROM usage_tracking t JOIN plans p ON p.id = t.plan_id"
            " WHERE t.customer_id = %s AND t.period_start >= %s",
            [customer.pk, end],
        )
        assert [r[0] for r in cursor.fetchall()] == ["growth"]
    assert start < end <= timezone.now() + timedelta(days=62)
