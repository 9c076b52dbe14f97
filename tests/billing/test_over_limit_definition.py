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


def _drift(customer, **counters):
    """Set the customer's current-period counters past their guard (triggers off): drift."""
    sets = ", ".join(f"{column} = %({column})s" for column in counters)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            f"UPDATE usage_tracking SET {sets} WHERE customer_id = %(id)s AND period_start <= now() "
            "AND period_end > now()",
            {**counters, "id": customer.pk},
        )
        cursor.execute("SET LOCAL session_replication_role = origin")


def test_the_reports_over_limit_finding_reads_the_truth_from_its_drift_scan():
    """The report over a million customers spent ~600 s counting each customer's projects and summing
    its events for the over-limit finding, after its drift scan had compared every counter with that
    truth (bench/integrity.py). It now reads the truth from the scan (counter + the scan's difference):
    usage_events is read once per report. Its findings are the per-customer definition's, drift or
    not: truth over with its counter under (hidden), its counter over with the truth under (inflated),
    the S1 customers (a counter with no projects, projects with no counter, no period row at all)."""
    demo_data_load(customers=16, seed=11)
    starter = Plan.objects.get(code="starter")
    hidden = _on("starter")
    UsageEvent.objects.create(customer=hidden, metric="minutes", quantity=starter.minutes_per_period + 7)
    _drift(hidden, minutes_used=0)
    inflated = _on("starter")
    UsageEvent.objects.create(customer=inflated, metric="ai_interaction", quantity=2)
    _drift(inflated, ai_interactions_count=starter.ai_interactions_per_period + 50, active_projects_count=9)

    from django.test.utils import CaptureQueriesContext

    from billing.ops.integrity import discrepancy_report

    with CaptureQueriesContext(connection) as queries:
        report = discrepancy_report(started_by="test")
    reading_events = [q["sql"] for q in queries if "FROM usage_events" in q["sql"]]
    assert len(reading_events) == 1, reading_events  # the drift scan's; the finding reads its rows

    found = [f.as_dict() for f in report.findings if f.check == "over_limit"]
    assert found == [f.as_dict() for f in over_limit()]  # the per-customer definition, no scan
    by_customer = {f["customer_id"]: f["detail"] for f in found}
    assert f"{starter.minutes_per_period + 7:,} / {starter.minutes_per_period:,}".replace(",", "") in (
        by_customer[str(hidden.pk)].replace(",", "")
    )
    assert str(inflated.pk) not in by_customer
    six = Customer.objects.get(email__startswith="s1-six")
    assert by_customer[str(six.pk)].startswith("6 / 1 active projects")
    assert report.summary["findings"]["over_limit"] == len(by_customer)
