"""One definition per concept (SPEC §3): the metric catalogue, the live plan, the current period.

SQL and Python read the same definition; these tests fail when a copy creeps back in.
"""

import re

import pytest
from django.db import connection

from billing.models import Plan, Subscription
from billing.selectors import customer_plan, live_subscription, plan_allowance
from demo.data import plans_ensure
from tests.conftest import ROOT
from usage.metrics import METERED, METRICS
from usage.models import UsageEvent

PRODUCTION = [
    p
    for p in [
        *ROOT.glob("usage/**/*.py"),
        *ROOT.glob("usage/**/*.sql"),
        *ROOT.glob("billing/**/*.py"),
        *ROOT.glob("billing/**/*.sql"),
    ]
    if "/migrations/" not in str(p)
]


def _copies(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in PRODUCTION if re.search(pattern, p.read_text()))


def test_the_current_period_predicate_is_written_once():
    assert _copies(r"\b(p_start|period_start)\s*<=\s*now\(\)") == ["usage/sql/usage_period_current.sql"]
    assert _copies(r"period_start__lte") == []


def test_the_live_plan_is_written_once():
    assert _copies(r"status\s*<>\s*'canceled'") == ["billing/sql/billing_live_by_customer.sql"]
    assert _copies(r"Status\.CANCELED\)") == []


def test_metric_labels_and_allowance_columns_are_written_once():
    assert _copies(r"(?i)'transcription minutes'|\"transcription minutes\"") == ["usage/metrics.py"]
    assert _copies(r"\b(ai_interactions_per_period|minutes_per_period)\b") == [
        "billing/admin.py",  # the plan admin's form fields
        "billing/models.py",
        "usage/metrics.py",
    ]


@pytest.mark.django_db
def test_sql_reads_the_python_catalogue():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT code, check_name, counter, allowance, label, unit, whole, metered FROM usage_metrics()"
        )
        rows = cursor.fetchall()
    assert rows == [
        (m.code, m.check, m.counter, m.allowance, m.label, m.unit, m.whole, m.metered) for m in METRICS
    ]
    assert [(c.value, c.label) for c in UsageEvent.Metric] == [(m.code, m.title) for m in METERED]


@pytest.mark.django_db
def test_python_and_sql_agree_on_the_live_plan_and_the_allowances(customer):
    plans = plans_ensure()

    def sql_plan():
        with connection.cursor() as cursor:
            cursor.execute("SELECT plan_id, subscription_status FROM billing_live_plan(%s)", [customer.pk])
            return cursor.fetchone()

    assert customer_plan(customer) == plans["free"] and live_subscription(customer) is None
    assert sql_plan() == (plans["free"].pk, "none")
    common = dict(
        customer=customer,
        processor="manual",
        current_period_start=customer.current_period_start,
        current_period_end=customer.current_period_end,
    )
    Subscription.objects.create(plan=plans["growth"], status="canceled", **common)
    assert customer_plan(customer) == plans["free"]
    live = Subscription.objects.create(plan=plans["starter"], status="active", **common)
    assert live_subscription(customer) == live and customer_plan(customer) == plans["starter"]
    assert sql_plan() == (plans["starter"].pk, "active")
    for plan in Plan.objects.all():
        for metric in METRICS:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT billing_plan_allowance(p, %s) FROM plans p WHERE p.id = %s",
                    [metric.code, plan.pk],
                )
                assert cursor.fetchone()[0] == plan_allowance(plan, metric)


def test_over_a_limit_is_written_once():
    """Support's findings (the truth) and Finance's page (the counters) share billing.selectors' rule."""
    assert _copies(r"(?<![->])>\s*\w+\.allowance\b") == ["billing/selectors.py"]
