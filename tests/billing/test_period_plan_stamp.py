"""Every usage period is stamped with its plan as it opens (issue 12; SPEC §7 Finance): whoever opens it
(a project or an event statement through the counters' triggers, one row or a bulk statement opening
many periods, consume's lazy open, a rollover), usage_tracking.plan_id is the customer's live plan,
Free without a live subscription. Before billing 0021 only the rollover stamped: the other paths left
it NULL and every finance reader probed the live plan per row."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from billing.finance.selectors import usage_by_plan
from billing.models import Subscription, UsagePeriodPlan
from billing.ops.usage_report import usage_report
from billing.services.consume import consume
from billing.services.periods import period_roll_due
from demo.data import plans_ensure
from tests.factories import CustomerFactory, ProjectFactory, UsageEventFactory, subscribe
from usage.models import Project, UsageEvent

pytestmark = pytest.mark.django_db


def stamps(*customers) -> dict:
    """{(customer email, period start): the code of the plan stamped on the period, None if unstamped}."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.email, t.period_start, p.code FROM usage_tracking t JOIN customers c ON c.id = t.customer_id"
            " LEFT JOIN plans p ON p.id = t.plan_id WHERE t.customer_id = ANY(%s::uuid[])",
            [[str(c.pk) for c in customers]],
        )
        return {(email, start): code for email, start, code in cursor.fetchall()}


def test_each_opening_path_stamps_the_live_plan():
    plans = plans_ensure()
    by_project, by_event, by_late_event, by_consume, by_rollover = (
        CustomerFactory(email=f"{name}@stamp.test")
        for name in ("project", "event", "late", "consume", "roll")
    )
    for customer, code in (
        (by_project, "starter"),
        (by_event, "growth"),
        (by_late_event, "pro"),
        (by_consume, "starter"),
        (by_rollover, "growth"),
    ):
        subscribe(customer, plans[code])
    ProjectFactory(customer=by_project)  # projects_on_insert opens the current period
    UsageEventFactory(customer=by_event, quantity=2)  # usage_events_on_insert opens it
    earlier = by_late_event.current_period_start - timedelta(days=3)
    UsageEventFactory(customer=by_late_event, occurred_at=earlier)  # a late event opens a past period
    assert consume(customer_id=by_consume.pk, metric="ai_interaction", amount=1).allowed  # lazy open
    end = by_rollover.current_period_end
    assert period_roll_due(now=end + timedelta(hours=1), actor="test") >= 1

    got = stamps(by_project, by_event, by_late_event, by_consume, by_rollover)
    assert got[("project@stamp.test", by_project.current_period_start)] == "starter"
    assert got[("event@stamp.test", by_event.current_period_start)] == "growth"
    past = [code for (email, start), code in got.items() if email == "late@stamp.test" and start <= earlier]
    assert past == ["pro"]
    assert got[("consume@stamp.test", by_consume.current_period_start)] == "starter"
    assert got[("roll@stamp.test", end)] == "growth"
    assert None not in got.values()


def test_a_customer_with_no_live_subscription_is_stamped_free():
    plans = plans_ensure()
    nobody = CustomerFactory(email="nobody@stamp.test")
    canceled = CustomerFactory(email="canceled@stamp.test")
    subscribe(canceled, plans["pro"], status=Subscription.Status.CANCELED)
    UsageEventFactory(customer=nobody)
    assert consume(customer_id=canceled.pk, metric="minutes", amount=1).allowed
    assert set(stamps(nobody, canceled).values()) == {"free"}


def test_a_bulk_insert_across_many_customers_stamps_each_with_its_own_plan():
    plans = plans_ensure()
    codes = [None, "free", "starter", "growth", "pro"]
    customers, expected = [], {}
    for i in range(25):
        customer = CustomerFactory(email=f"bulk{i}@stamp.test")
        code = codes[i % len(codes)]
        if code is not None:
            subscribe(customer, plans[code])
        customers.append(customer)
        expected[(customer.email, customer.current_period_start)] = code or "free"
    # One INSERT of events for every customer (their periods opened by one statement trigger), and one
    # of events a month back (the periods before, opened by the same path's other branch).
    UsageEvent.objects.bulk_create(
        UsageEvent(
            customer=c, metric=UsageEvent.Metric.MINUTES, quantity=3, occurred_at=c.current_period_start
        )
        for c in customers
    )
    UsageEvent.objects.bulk_create(
        UsageEvent(
            customer=c,
            metric=UsageEvent.Metric.MINUTES,
            quantity=1,
            occurred_at=c.current_period_start - timedelta(days=5),
        )
        for c in customers
    )
    Project.objects.bulk_create(
        Project(customer=c, name="p", status=Project.Status.ACTIVE) for c in customers
    )
    got = stamps(*customers)
    assert len(got) == 50
    for (email, start), code in got.items():
        if start in {c.current_period_start for c in customers if c.email == email}:
            assert code == expected[(email, start)], email
        else:  # the period before: the same live plan
            assert (
                code == expected[(email, next(c.current_period_start for c in customers if c.email == email))]
            )


@pytest.mark.django_db(transaction=True)  # ALTER TABLE between committed statements
def test_a_period_written_with_the_stamp_disabled_is_counted_in_the_line_of_no_plan():
    """A NULL stamp (the trigger disabled: check_triggers says so) means no plan was recorded: the
    period keeps its row in the report and is summed in "(no plan)" on the month page, so the totals
    still add up; it is not given the live plan (that probe kept the readers on one core)."""
    plans = plans_ensure()
    stamped, unstamped = CustomerFactory(email="stamped@stamp.test"), CustomerFactory(email="bare@stamp.test")
    for customer in (stamped, unstamped):
        subscribe(customer, plans["starter"])
    UsageEventFactory(customer=stamped, quantity=3)
    trigger = UsagePeriodPlan._meta.triggers[0].get_pgid(UsagePeriodPlan)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE usage_tracking DISABLE TRIGGER {trigger}")
        UsageEventFactory(customer=unstamped, quantity=4)
        cursor.execute(f"ALTER TABLE usage_tracking ENABLE TRIGGER {trigger}")
    month = stamped.current_period_start.strftime("%Y-%m")
    report = {r["email"]: (r["plan"], r["ai_interactions"]) for r in usage_report(month)}
    assert report == {"stamped@stamp.test": ("starter", 3), "bare@stamp.test": (None, 4)}
    rows, total = usage_by_plan(month)
    assert {(row.plan, row.name, row.metrics["ai"].used) for row in rows} == {
        ("starter", "Starter", 3),
        (None, "(no plan)", 4),
    }
    assert total.metrics["ai"].used == 7


def test_a_report_read_in_part_leaves_the_connection_usable():
    """usage_report streams by COPY: a reader that stops early (a CSV download cut short) ends it."""
    plans = plans_ensure()
    for i in range(5):
        customer = CustomerFactory(email=f"part{i}@stamp.test")
        subscribe(customer, plans["growth"])
        UsageEventFactory(customer=customer)
    month = customer.current_period_start.strftime("%Y-%m")
    rows = usage_report(month)
    assert next(rows)["plan"] == "growth"
    rows.close()
    assert len(list(usage_report(month))) == 5


def test_the_report_reads_every_value_as_the_database_holds_it():
    """usage_report reads COPY's text: escaped characters, NULLs, decimals and times come back exact."""
    plans = plans_ensure()
    odd = CustomerFactory(email="tab\there\\back\nline@stamp.test")
    subscribe(odd, plans["pro"])
    UsageEventFactory(customer=odd, metric=UsageEvent.Metric.MINUTES, quantity="2.125")
    month = odd.current_period_start.strftime("%Y-%m")
    (row,) = usage_report(month)
    assert row["email"] == "tab\there\\back\nline@stamp.test"
    assert row["customer_id"] == odd.pk and row["plan"] == "pro"
    assert (row["period_start"], row["period_end"]) == (odd.current_period_start, odd.current_period_end)
    assert row["minutes"] == Decimal("2.125") and row["ai_interactions"] == 0
    assert row["active_projects"] == 0 and row["ai_from_credit"] == 0
    pro = plans["pro"]
    assert row["ai_allowance"] == pro.ai_interactions_per_period
    assert row["minutes_allowance"] == pro.minutes_per_period
