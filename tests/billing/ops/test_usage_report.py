"""usage_report (SPEC §8): finance's month, streamed as table, JSON or CSV; bad months exit 2."""

import csv
import io
import json

import pytest
from django.utils import timezone

from billing.models import Plan, Subscription
from billing.services.consume import consume
from billing.services.credits import credit_grant
from demo.data import plans_ensure
from tests.conftest import run_manage
from tests.factories import CustomerFactory, ProjectFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_month_report_shows_usage_allowance_and_credit_in_every_format():
    plans = plans_ensure()
    Plan.objects.filter(pk=plans["starter"].pk).update(minutes_per_period=100)
    customer = CustomerFactory(email="finance-case@example.com")
    Subscription.objects.create(
        customer=customer,
        plan=plans["starter"],
        current_period_start=customer.current_period_start,
        current_period_end=customer.current_period_end,
    )
    ProjectFactory(customer=customer)
    credit_grant(customer=customer, metric="minutes", quantity=50, source="purchase", actor="t")
    consume(customer_id=customer.pk, metric="minutes", amount=120)
    month = customer.current_period_start.strftime("%Y-%m")

    result = run_manage("usage_report", "--month", month, "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    row = next(r for r in document["rows"] if r["email"] == "finance-case@example.com")
    assert (
        row["plan"],
        row["active_projects"],
        row["minutes"],
        row["minutes_allowance"],
        row["minutes_from_credit"],
    ) == ("starter", 1, 120, 100, 20)
    assert document["totals"]["minutes_from_credit"] == 20

    rows = list(
        csv.DictReader(io.StringIO(run_manage("usage_report", "--month", month, "--format", "csv").stdout))
    )
    assert any(r["email"] == "finance-case@example.com" and r["minutes"] == "120" for r in rows)
    table = run_manage("usage_report", "--month", month).stdout
    assert "finance-case@example.com" in table and "(20 from credit)" in table

    empty = run_manage("usage_report", "--month", "2000-01", "--format", "json")
    assert json.loads(empty.stdout)["rows"] == []


@pytest.mark.parametrize(
    ("month", "message"),
    [
        ("2026-13", "month 2026-13 does not exist: a month is 01 to 12"),
        ("2026-00", "month 2026-00 does not exist"),
        ("2026-1", "YYYY-MM"),
        ("november", "YYYY-MM"),
        ("", "YYYY-MM"),
        ("0000-01", "out of range: from 2000-01"),
    ],
)
def test_bad_month_exits_2_without_traceback(month, message):
    result = run_manage("usage_report", "--month", month)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.django_db
def test_the_trends_used_figures_are_the_month_reports():
    """months_used_by_plan (the trends' lean statement for a month not summarized) sums what
    months_by_plan sums, plan by plan, for every month the demo has usage in."""
    from billing.finance.selectors import month_shift
    from billing.ops.usage_report import BY_PLAN_FIELDS, months_by_plan, months_used_by_plan
    from demo.data import demo_data_load

    demo_data_load(customers=40, seed=4)

    this_month = timezone.now().strftime("%Y-%m")
    months = [month_shift(this_month, k) for k in range(-3, 2)]
    full = months_by_plan(months)
    ai, minutes = BY_PLAN_FIELDS.index("ai_used"), BY_PLAN_FIELDS.index("minutes_used")
    expected = {m: sorted((f[0], f[ai], f[minutes]) for f in per_plan) for m, per_plan in full.items()}
    assert sum(len(rows) for rows in expected.values()) >= 4  # usage in several months and plans
    assert {m: sorted(rows) for m, rows in months_used_by_plan(months).items()} == expected
