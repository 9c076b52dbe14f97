""" "Over a limit" is defined once (issue 8's rule: billing.selectors.over_limit_lines and
OVER_LIMIT_RULE): support's findings read it from the truth, Finance's over-limit page from the
per-period counters. When nothing has drifted they list the same customers, limits and numbers; a
drifted counter shows on Finance's page only, never as a support remedy."""

from decimal import Decimal

import pytest
from django.db import connection

from billing.finance.selectors import over_limit_customers
from billing.models import Plan, Subscription
from billing.ops.findings import over_limit
from billing.ops.integrity import usage_reconcile
from billing.selectors import OVER_LIMIT_SQL, customer_usage_scope, over_limit_lines
from billing.services.consume import consume
from billing.services.credits import credit_grant
from demo.data import demo_data_load
from tests.factories import CustomerFactory
from usage.models import Customer, UsageEvent

pytestmark = pytest.mark.django_db


def _support() -> dict:
    scope, params = customer_usage_scope(None)
    with connection.cursor() as cursor:
        cursor.execute(OVER_LIMIT_SQL.format(scope=scope), params)
        return {(str(r[0]), r[3]): (r[4], r[5]) for r in cursor.fetchall()}


def _finance() -> dict:
    return {(r.customer_id, r.metric): (r.used, r.allowance + r.credit) for r in over_limit_customers()}


def _on(plan_code: str) -> Customer:
    customer = CustomerFactory()
    customer.refresh_from_db()  # the period bounds the database chose
    Subscription.objects.create(
        customer=customer,
        plan=Plan.objects.get(code=plan_code),
        status="active",
        processor="manual",
        current_period_start=customer.current_period_start,
        current_period_end=customer.current_period_end,
    )
    return customer


def test_support_and_finance_list_the_same_over_limit_lines_when_nothing_drifted():
    demo_data_load(customers=16, seed=11)  # S1 (projects), S5 (minutes with credit), the demo's others
    starter = Plan.objects.get(code="starter")
    ai_over = _on("starter")  # past the AI allowance by the product's own inserts (no consume)
    UsageEvent.objects.create(
        customer=ai_over, metric="ai_interaction", quantity=starter.ai_interactions_per_period + 3
    )
    covered = _on("starter")  # past the minutes allowance, and credit drew what was past it: not over
    credit_grant(
        customer=covered, metric="minutes", quantity=Decimal(50), source="goodwill", reason="t", actor="t"
    )
    assert consume(customer_id=covered.pk, metric="minutes", amount=starter.minutes_per_period + 20).allowed
    half = _on("starter")  # credit paid for part of it, the product's insert took the rest: over by 5
    credit_grant(
        customer=half, metric="minutes", quantity=Decimal(10), source="goodwill", reason="t", actor="t"
    )
    assert consume(customer_id=half.pk, metric="minutes", amount=starter.minutes_per_period + 10).allowed
    UsageEvent.objects.create(customer=half, metric="minutes", quantity=5)
    usage_reconcile(apply=True, started_by="test")  # the demo's planted drift (S1) set right

    support, finance = _support(), _finance()
    assert support == finance
    assert support[(str(ai_over.pk), "ai_interaction")] == (
        starter.ai_interactions_per_period + 3,
        starter.ai_interactions_per_period,
    )
    assert support[(str(half.pk), "minutes")] == (
        starter.minutes_per_period + 15,
        starter.minutes_per_period + 10,  # the allowance and the 10 minutes credit paid for
    )
    assert not [key for key in support if key[0] == str(covered.pk)]
    assert {metric for _, metric in support} == {"active_projects", "ai_interaction", "minutes"}

    # A counter that drifted (written with the triggers off) shows on Finance's page, which reads the
    # counters, and never as a support remedy, which reads the truth.
    quiet = _on("starter")
    UsageEvent.objects.create(customer=quiet, metric="ai_interaction", quantity=1)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE usage_tracking SET ai_interactions_count = 10000 WHERE customer_id = %s", [quiet.pk]
        )
        cursor.execute("SET LOCAL session_replication_role = origin")
    assert (str(quiet.pk), "ai_interaction") in _finance()
    assert (str(quiet.pk), "ai_interaction") not in _support()
    assert not [f for f in over_limit([quiet.pk])]


def test_the_rule_reads_one_source_or_refuses():
    assert "u.ai_actual" in over_limit_lines("actual") and "_tracked" not in over_limit_lines("actual")
    assert "u.ai_tracked" in over_limit_lines("tracked") and "_actual" not in over_limit_lines("tracked")
    with pytest.raises(ValueError, match="source"):
        over_limit_lines("events")
