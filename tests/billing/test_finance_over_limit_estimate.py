"""The over-limit page's scan of the current periods, as the planner sees it (SPEC §11, issue 12).

Only a period above its own plan's allowance can be over, and at 1M that is 57k of a million current
periods. The parallel workers that scan the periods keep only those, and the planner must see that they
are few: otherwise the parallel plan (which hands every row it keeps through a Gather) looks dearer than
a serial index scan, and on the live layout (periods stored by month) the page took the serial scan, at
twice the time (README, "Finance pages"). The planner's estimate is checked, not a time: with the plans'
allowances as constants it reads the counters' statistics; compared through a join of the plans (or a
subquery's least allowance) it guessed a third per comparison."""

import pytest
from django.db import connection

from billing.finance.selectors import _over_limit_statement, over_limit_customers
from tests.factories import CustomerFactory, PlanFactory
from usage.models import UsageEvent
from usage.names import render

pytestmark = pytest.mark.django_db

CUSTOMERS = 600
ABOVE = 6


def _nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def test_the_planner_sees_how_few_current_periods_are_above_their_plans_allowance():
    free = PlanFactory(
        code="free", max_active_projects=3, ai_interactions_per_period=50, minutes_per_period=60
    )
    PlanFactory(
        code="pro",
        price=20,
        max_active_projects=None,
        ai_interactions_per_period=500,
        minutes_per_period=None,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            render(
                "INSERT INTO customers (email, name)"
                " SELECT format('estimate%%s@example.com', i), 'Estimate' FROM generate_series(1, %s) AS i"
            ),
            [CUSTOMERS],
        )
        # Every customer's current period, opened by its first event: a few minutes, under any allowance.
        cursor.execute(
            render(
                "INSERT INTO usage_events (customer_id, metric, quantity)"
                " SELECT id, 'minutes', 1 + length(email) % 7 FROM customers"
            )
        )
        cursor.execute(render("SELECT id FROM customers ORDER BY email LIMIT %s"), [ABOVE])
        above = [row[0] for row in cursor.fetchall()]
    for customer_id in above:  # past Free's minutes allowance by the product's own inserts
        UsageEvent.objects.create(customer_id=customer_id, metric="minutes", quantity=free.minutes_per_period)
    lines = over_limit_customers()
    assert sorted((line.customer_id, line.metric) for line in lines) == sorted(
        (str(customer_id), "minutes") for customer_id in above
    )

    with connection.cursor() as cursor:
        cursor.execute(render("ANALYZE usage_tracking"))  # every row is in the sample at this size
        sql, params = _over_limit_statement(every=False)
        cursor.execute("EXPLAIN (FORMAT JSON) " + render(sql), {**params, "limit": 100})
        plan = cursor.fetchone()[0][0]["Plan"]
    (cte,) = [node for node in _nodes(plan) if node.get("Subplan Name") == "CTE above"]
    (scan,) = [node for node in _nodes(cte) if node.get("Relation Name") == "usage_tracking"]
    # The six current periods above Free's allowance, as the scan of the periods estimates them (from
    # the counters' statistics); a guess of a third per comparison would be 200 and more.
    assert scan["Plan Rows"] <= 3 * ABOVE


def test_no_line_when_no_plan_limits_anything():
    # No plan contributes a condition to the scan: it keeps no period (and the statement still parses).
    PlanFactory(
        code="free", max_active_projects=None, ai_interactions_per_period=None, minutes_per_period=None
    )
    customer = CustomerFactory()
    UsageEvent.objects.create(customer=customer, metric="minutes", quantity=10_000)
    assert over_limit_customers() == []
    assert over_limit_customers(limit=10) == []
